"""Pooling: MAX, AVE (and STOCHASTIC, which the reference refuses) over 2-D windows of a 4-D input.

Shapes (``PoolingLayer::Reshape``): ``out = ceil((in + 2 * pad - kernel) / stride) + 1``
(``floor`` with ``round_mode: FLOOR``, or the forks' ``ceil_mode: false``);
then, when there is any padding (``pad_h || pad_w``), a last window that
starts in the padding (``(out - 1) * stride >= in + pad``) is dropped.
``global_pooling`` pools the whole H x W. A second top (the MAX mask) has
the output's shape; Caffe allows it for MAX only.

Forward (``PoolingLayer::Forward_cpu``), per output position with window
start ``hstart = ph * stride_h - pad_h`` (likewise w):

- MAX: the window is clipped to the image, ``[max(hstart, 0), min(hstart +
  kernel_h, H))``; the result starts at ``-FLT_MAX`` and takes each value
  scanned in row-major order that is strictly greater, so padding never
  counts, ties keep the first position and NaN is never taken. The mask top
  holds that position's index ``h * W + w`` in the input plane (as a float),
  ``-1`` when nothing beat ``-FLT_MAX``. With padding, the drop rule above and
  ``pad < kernel`` guarantee every window holds an image pixel; without
  padding, ceil rounding with ``stride > kernel`` can leave a last window
  entirely past the image, which gives ``-FLT_MAX`` and mask ``-1``.
- AVE: the divisor is taken before clipping to the image but after clipping
  to the padded extent: ``(min(hstart + kernel_h, H + pad_h) - hstart) *
  (min(wstart + kernel_w, W + pad_w) - wstart)``, so padding cells count and
  the cells past ``H + pad`` of a ceil-rounded last window do not; the sum
  runs over the window clipped to the image, in float32.
- STOCHASTIC: Caffe's CPU forward is ``NOT_IMPLEMENTED`` (only the GPU has it:
  random sampling in TRAIN, a value-weighted average in TEST); refused.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Shape
from caffeport.layers.fields import enum_name, error
from caffeport.layers.registry import LayerType, Tops, register
from caffeport.layers.windows import describe_window, pool_window

#: Caffe's PoolMethod enum numbers
POOL_METHODS = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
FLT_MAX = np.float32(np.finfo(np.float32).max)


def pooled_size(layer: Layer, size: int, k: int, pad: int, stride: int, floor: bool, padded: bool) -> int:
    """Caffe's pooled extent: ceil (or floor), then drop a last window that starts in the padding."""
    if k <= 0 or stride <= 0:
        raise error(layer, f"pooling kernel {k} and stride {stride} must be positive")
    if pad >= k:
        raise error(layer, f"pooling pad {pad} must be smaller than the kernel {k}")
    span = size + 2 * pad - k
    if span < 0:
        raise error(layer, f"pooling kernel {k} is larger than the padded input {size} + 2*{pad}")
    out = (span // stride if floor else -(-span // stride)) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def rounds_down(layer: Layer) -> bool:
    """``round_mode: FLOOR`` (or ``ceil_mode: false``, how some forks spell it); Caffe's default is CEIL."""
    p = layer.param("pooling_param")
    round_mode = str(p.get("round_mode", "CEIL")).upper()
    return ("ceil_mode" in p and not p["ceil_mode"]) or round_mode in ("FLOOR", "1")


def pool_method(value: object) -> str:
    """A PoolMethod as its name (``"MAX"``...), from the name or Caffe's enum number; MAX when absent."""
    return enum_name(int(value) if isinstance(value, np.integer) else value, POOL_METHODS, "MAX")


def pool_unsupported(method: str) -> str | None:
    """Why the reference cannot pool with ``method`` (Pooling and SPP share the methods), or ``None``."""
    if method == "STOCHASTIC":
        return "pool STOCHASTIC has no CPU forward in Caffe (GPU only, random in TRAIN); not supported"
    if method not in ("MAX", "AVE"):
        return f"unknown pool method {method!r}"
    return None


def pool_forward(x: np.ndarray, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], out: tuple[int, int],
                 mask: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Caffe's MAX or AVE pooling of ``x`` (N, C, H, W) to ``out`` positions; with ``mask``, MAX's argmax top too.

    The caller gives the output size (`pooled_size`), so SPP can run its
    synthetic windows through the same code.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out
    if (kh, kw) == (h, w) and (oh, ow) == (1, 1) and (ph, pw) == (0, 0):
        return _one_window(x, method, mask)
    touch = (min(oh, -(-(ph + h) // sh)), min(ow, -(-(pw + w) // sw)))  # windows starting before the image ends
    if touch != (oh, ow):
        return _past_the_image(x, method, kernel, stride, pad, out, touch, mask)
    # a canvas holding every window: `pad` before the image, up to the last window's end after it
    # (MAX fills with -inf, which never beats -FLT_MAX; AVE with 0, which adds nothing to the sum)
    rows = max(ph + h, (oh - 1) * sh + kh)
    cols = max(pw + w, (ow - 1) * sw + kw)
    if (rows, cols) == (h, w):  # no padding and every window inside the image: read the input itself
        canvas = x
    else:
        canvas = np.full((n, c, rows, cols), -np.inf if method == "MAX" else 0.0, np.float32)
        canvas[:, :, ph : ph + h, pw : pw + w] = x
    hstart = np.arange(oh) * sh - ph
    wstart = np.arange(ow) * sw - pw

    def tap(dh: int, dw: int) -> np.ndarray:
        return canvas[:, :, dh : dh + (oh - 1) * sh + 1 : sh, dw : dw + (ow - 1) * sw + 1 : sw]

    if method == "MAX":
        best = np.full((n, c, oh, ow), -FLT_MAX, np.float32)
        index = np.full((n, c, oh, ow), -1.0, np.float32) if mask else None
        for dh in range(kh):
            for dw in range(kw):
                value = tap(dh, dw)
                if index is None:
                    np.fmax(best, value, out=best)  # fmax skips NaN, as Caffe's `>` never takes it
                    continue
                better = value > best
                np.copyto(best, value, where=better)
                plane = ((hstart[:, None] + dh) * w + (wstart[None, :] + dw)).astype(np.float32)
                np.copyto(index, np.broadcast_to(plane, index.shape), where=better)
        return best, index
    total = np.zeros((n, c, oh, ow), np.float32)
    for dh in range(kh):
        for dw in range(kw):
            total += tap(dh, dw)  # row-major, as Caffe sums (adding a padding zero changes nothing)
    size_h = np.minimum(hstart + kh, h + ph) - hstart
    size_w = np.minimum(wstart + kw, w + pw) - wstart
    return total / (size_h[:, None] * size_w[None, :]).astype(np.float32), None


def _past_the_image(x: np.ndarray, method: str, kernel: tuple[int, int], stride: tuple[int, int],
                    pad: tuple[int, int], out: tuple[int, int], touch: tuple[int, int],
                    mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooling whose last windows (ceil mode) start past the padded image: those hold no input at all.

    Caffe's loops over such a window do nothing, leaving MAX's -FLT_MAX (mask
    -1) and AVE's 0 divided by its pool size. The canvas `pool_forward` builds
    reaches the last window's start, i.e. as far as the stride: 2^31 rows for
    a ``stride_h: 2147483648`` over 4 rows (96 GiB). So the windows that touch
    the image are pooled on their own and the rest filled in.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = kernel, stride, pad, out
    inner, inner_index = pool_forward(x, method, kernel, stride, pad, touch, mask)
    if method == "MAX":
        top = np.full((n, c, oh, ow), -FLT_MAX, np.float32)
    else:
        hstart, wstart = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
        size = (np.minimum(hstart + kh, h + ph) - hstart)[:, None] * (np.minimum(wstart + kw, w + pw) - wstart)
        top = np.broadcast_to(np.float32(0) / size.astype(np.float32), (n, c, oh, ow)).copy()
    top[:, :, : touch[0], : touch[1]] = inner
    if inner_index is None:
        return top, None
    index = np.full((n, c, oh, ow), -1.0, np.float32)
    index[:, :, : touch[0], : touch[1]] = inner_index
    return top, index


def _one_window(x: np.ndarray, method: str, mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Global pooling (one window over the whole unpadded plane), reduced at once instead of tap by tap."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    if method != "MAX":
        return (flat.sum(axis=2, dtype=np.float32) / np.float32(h * w)).reshape(n, c, 1, 1), None
    if not mask:
        best = np.fmax(np.fmax.reduce(flat, axis=2), -FLT_MAX)  # NaN and values <= -FLT_MAX never win
        return best.reshape(n, c, 1, 1).astype(np.float32), None
    usable = np.where(flat > -FLT_MAX, flat, np.float32(-np.inf))
    first = np.argmax(usable, axis=2)  # the first maximum, as Caffe's strict `>` keeps
    value = np.take_along_axis(usable, first[:, :, None], axis=2)[:, :, 0]
    found = value > -np.inf
    best = np.where(found, value, -FLT_MAX).astype(np.float32)
    index = np.where(found, first, -1).astype(np.float32)
    return best.reshape(n, c, 1, 1), index.reshape(n, c, 1, 1)


@register("Pooling")
class Pooling(LayerType):
    param = "pooling_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        if len(shape) != 4:
            raise error(layer, f"Pooling needs a 4-D input (N, C, H, W), got {shape}")
        p = self.params_of(layer)
        method = pool_method(p.get("pool"))
        if len(layer.tops) > (2 if method == "MAX" else 1):
            raise error(layer, f"{method} pooling has {len(layer.tops)} tops; only MAX may have a second (mask) top")
        n, c, h, w = shape
        if p.get("global_pooling", False):
            return [(n, c, 1, 1)] * len(layer.tops)
        window = pool_window(layer)
        (kh, kw), (ph, pw), (sh, sw) = window.kernel, window.pad, window.stride
        floor, padded = rounds_down(layer), bool(ph or pw)
        out_h = pooled_size(layer, h, kh, ph, sh, floor, padded)
        out_w = pooled_size(layer, w, kw, pw, sw, floor, padded)
        return [(n, c, out_h, out_w)] * len(layer.tops)

    def unsupported(self, layer: Layer) -> str | None:
        reason = pool_unsupported(pool_method(self.params_of(layer).get("pool")))
        return reason or super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], np.float32)
        tops = self.infer(layer, [x.shape])
        assert tops is not None and tops[0] is not None
        out = (tops[0][2], tops[0][3])
        if self.params_of(layer).get("global_pooling", False):
            kernel, stride, pad = x.shape[2:], (1, 1), (0, 0)
        else:
            window = pool_window(layer)
            kernel, stride, pad = window.kernel, window.stride, window.pad
        method = pool_method(self.params_of(layer).get("pool"))
        top, mask = pool_forward(x, method, (kernel[0], kernel[1]), (stride[0], stride[1]), (pad[0], pad[1]), out,
                                 mask=len(layer.tops) > 1)
        return [top] if mask is None else [top, mask]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        method = pool_method(p.get("pool"))
        if p.get("global_pooling"):
            return f"{method} global"
        try:
            window = describe_window(pool_window(layer))
        except ShapeInferenceError:  # inspect describes what it can; the shape rule reports the error
            window = "window=?"
        return f"{method} {window}"
