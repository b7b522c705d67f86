"""Pooling: MAX, AVE (and STOCHASTIC, which the reference refuses) over 2-D windows of a 4-D input.

Shapes (``PoolingLayer::Reshape``): ``out = ceil((in + 2 * pad - kernel) / stride) + 1``
(``floor`` with ``round_mode: FLOOR``, or the forks' ``ceil_mode: false``);
then, when there is any padding (``pad_h || pad_w``), a last window that
starts in the padding (``(out - 1) * stride >= in + pad``) is dropped.
``global_pooling`` pools the whole H x W. A second top (the MAX mask) has
the output's shape.
"""

from __future__ import annotations

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error
from caffeport.layers.registry import LayerType, Tops, register
from caffeport.layers.windows import describe_window, pool_window


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


@register("Pooling")
class Pooling(LayerType):
    param = "pooling_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        if len(shape) != 4:
            raise error(layer, f"Pooling needs a 4-D input (N, C, H, W), got {shape}")
        n, c, h, w = shape
        if self.params_of(layer).get("global_pooling", False):
            return [(n, c, 1, 1)] * len(layer.tops)
        window = pool_window(layer)
        (kh, kw), (ph, pw), (sh, sw) = window.kernel, window.pad, window.stride
        floor, padded = rounds_down(layer), bool(ph or pw)
        out_h = pooled_size(layer, h, kh, ph, sh, floor, padded)
        out_w = pooled_size(layer, w, kw, pw, sw, floor, padded)
        return [(n, c, out_h, out_w)] * len(layer.tops)

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        if p.get("global_pooling"):
            return f"{p.get('pool', 'MAX')} global"
        try:
            window = describe_window(pool_window(layer))
        except ShapeInferenceError:  # inspect describes what it can; the shape rule reports the error
            window = "window=?"
        return f"{p.get('pool', 'MAX')} {window}"
