"""Convolution and pooling windows per spatial axis, resolved from Caffe's many spellings.

``kernel_size``/``pad``/``stride``/``dilation`` are repeated fields given once
for all spatial axes or once per axis; ``kernel_h``/``kernel_w`` (and the
``pad``/``stride`` pairs) win when present (``BaseConvolutionLayer::LayerSetUp``,
``PoolingLayer::LayerSetUp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caffeport.ir import Layer
from caffeport.layers.fields import error, ints


@dataclass(frozen=True)
class Window:
    """A convolution or pooling window per spatial axis."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]


def _per_axis(layer: Layer, p: dict[str, Any], field: str, prefix: str | None, n: int, default: int) -> list[int]:
    """A conv window field per spatial axis: once for all axes or once per axis, ``<prefix>_h/_w`` win."""
    values = ints(p.get(field))
    if len(values) not in (0, 1, n):
        raise error(layer, f"{field} given {len(values)} times for {n} spatial axes")
    result = values * n if len(values) == 1 else values or [default] * n
    if prefix is not None and (f"{prefix}_h" in p or f"{prefix}_w" in p):
        if n != 2:
            raise error(layer, f"{prefix}_h/{prefix}_w need 2 spatial axes, the input has {n}")
        result = [int(p.get(f"{prefix}_h", result[0])), int(p.get(f"{prefix}_w", result[1]))]
    return result


def conv_window(layer: Layer, n: int = 2) -> Window:
    """The window of a Convolution/Deconvolution over ``n`` spatial axes.

    Raises `ShapeInferenceError` naming the layer when the parameters cannot
    describe a window (no kernel, non-positive kernel, stride or dilation,
    negative pad).
    """
    p = layer.param("convolution_param")
    if not ints(p.get("kernel_size")) and "kernel_h" not in p and "kernel_w" not in p:
        raise error(layer, "convolution_param has no kernel_size (or kernel_h/kernel_w)")
    kernel = _per_axis(layer, p, "kernel_size", "kernel", n, 0)
    pad = _per_axis(layer, p, "pad", "pad", n, 0)
    stride = _per_axis(layer, p, "stride", "stride", n, 1)
    dilation = _per_axis(layer, p, "dilation", None, n, 1)
    if any(k <= 0 for k in kernel) or any(s <= 0 for s in stride) or any(d <= 0 for d in dilation):
        raise error(layer, f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    if any(q < 0 for q in pad):
        raise error(layer, f"pad {pad} must not be negative")
    return Window(tuple(kernel), tuple(stride), tuple(pad), tuple(dilation))


def _pool_pair(layer: Layer, p: dict[str, Any], field: str, prefix: str, default: int | None) -> tuple[int, int]:
    """Pooling's scalar ``field`` for both axes, ``<prefix>_h``/``_w`` overriding per axis."""
    values = ints(p.get(field))
    base = values[0] if values else default
    h, w = p.get(f"{prefix}_h", base), p.get(f"{prefix}_w", base)
    if h is None or w is None:
        raise error(layer, f"pooling_param has no {field} (or {prefix}_h and {prefix}_w)")
    return int(h), int(w)


def pool_window(layer: Layer) -> Window:
    """The 2-D window of a (non-global) Pooling layer; dilation is always 1."""
    p = layer.param("pooling_param")
    kh, kw = _pool_pair(layer, p, "kernel_size", "kernel", None)
    ph, pw = _pool_pair(layer, p, "pad", "pad", 0)
    sh, sw = _pool_pair(layer, p, "stride", "stride", 1)
    return Window((kh, kw), (sh, sw), (ph, pw), (1, 1))


def describe_window(window: Window) -> str:
    """``k=3 s=2 p=1`` (per axis ``3x5`` where the axes differ; ``d=`` only when dilated)."""

    def axes(values: tuple[int, ...]) -> str:
        return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))

    text = f"k={axes(window.kernel)} s={axes(window.stride)} p={axes(window.pad)}"
    return text + (f" d={axes(window.dilation)}" if any(d != 1 for d in window.dilation) else "")
