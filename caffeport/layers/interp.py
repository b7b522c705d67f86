"""Interp: DeepLab-v2 / PSPNet bilinear resize (``interp_param``), corner-aligned.

Source: ``src/caffe/layers/interp_layer.cpp`` and ``src/caffe/util/interp.cpp``
(``caffe_cpu_interp2``, George Papandreou's DeepLab code) in hszhao/PSPNet; the
copies in DeepLab-v2 forks (e.g. yjxiong/caffe) are the same.

Parameters (all int32): ``height``, ``width`` (default 0), ``zoom_factor``,
``shrink_factor`` (default 1), ``pad_beg``, ``pad_end`` (default 0). Which rule
applies depends on which fields are *present* in the prototxt (``has_*``), not
on their values:

- ``pad_beg``/``pad_end`` must be ``<= 0`` (``LayerSetUp`` CHECKs): they crop.
  The effective input is ``h_eff = H + pad_beg + pad_end`` (likewise ``w_eff``),
  the window starting at row and column ``-pad_beg`` (``pad_beg`` crops both
  the top and the left, ``pad_end`` the bottom and the right).
- Output size (``Reshape``), tried in this order:
  shrink_factor only: ``out = (eff - 1) // shrink + 1``;
  zoom_factor only: ``out = eff + (eff - 1) * (zoom - 1)``;
  height and width both given: ``out = (height, width)``;
  shrink and zoom both: shrink first, then zoom on the shrunk size;
  anything else is a fatal error. Factors must be ``>= 1``; ``eff`` and the
  output sizes must be positive. The top is the 4-D ``(N, C, out_h, out_w)``
  of the bottom's legacy ``num``/``channels``.

Values (``caffe_cpu_interp2``, per N*C plane, float arithmetic): when the
cropped input and the output have the same height *and* width the crop is
copied. Otherwise, per axis, ``r = (in - 1) / (out - 1)`` in float (0 when
``out == 1``); output row ``y`` reads ``yr = r * y``, ``y0 = int(yr)``
(truncation), ``y1 = y0 + 1`` unless ``y0`` is the last row (then ``y0``),
``ly1 = yr - y0``, ``ly0 = 1 - ly1``; the same for columns; and
``out = ly0 * (lx0 * p[y0, x0] + lx1 * p[y0, x1]) + ly1 * (lx0 * p[y1, x0] + lx1 * p[y1, x1])``
in that order of operations. It is ``align_corners=True`` bilinear: the
corners of input and output coincide.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, ints
from caffeport.layers.registry import LayerType, Tops, register


def _field(p: dict[str, Any], key: str, default: int) -> int:
    """An optional int32 field; a field given twice in a prototxt keeps its last value, as protobuf does."""
    values = ints(p.get(key))
    return values[-1] if values else default


def _legacy4(layer: Layer, shape: Shape) -> tuple[int, int, int, int]:
    """``num``/``channels``/``height``/``width`` as ``Blob::LegacyShape`` gives them (1 past the last axis)."""
    if len(shape) > 4:
        raise error(layer, f"Interp reads num/channels/height/width, which a {len(shape)}-D input does not have")
    n, c, h, w = (*shape, 1, 1, 1, 1)[:4]
    return n, c, h, w


def _pads(layer: Layer, p: dict[str, Any]) -> tuple[int, int]:
    pad_beg, pad_end = _field(p, "pad_beg", 0), _field(p, "pad_end", 0)
    if pad_beg > 0 or pad_end > 0:
        raise error(layer, f"Interp pad_beg {pad_beg} / pad_end {pad_end}: only non-positive padding (cropping) "
                           "is supported by Caffe's Interp")
    return pad_beg, pad_end


def _factor(layer: Layer, p: dict[str, Any], key: str) -> int:
    value = _field(p, key, 1)
    if value < 1:
        raise error(layer, f"interp_param.{key} must be >= 1, got {value}")
    return value


def interp_size(layer: Layer, height: int, width: int) -> tuple[int, int, int, int]:
    """``(h_eff, w_eff, out_h, out_w)`` for an input of ``height`` x ``width`` (``InterpLayer::Reshape``)."""
    p = layer.param("interp_param")
    pad_beg, pad_end = _pads(layer, p)
    h_eff, w_eff = height + pad_beg + pad_end, width + pad_beg + pad_end
    if h_eff <= 0 or w_eff <= 0:
        raise error(layer, f"Interp crops the {height}x{width} input to {h_eff}x{w_eff} "
                           f"(pad_beg {pad_beg}, pad_end {pad_end}): it must stay positive")
    has = {key: key in p and p[key] is not None for key in ("height", "width", "zoom_factor", "shrink_factor")}
    if has["shrink_factor"] and not has["zoom_factor"]:
        shrink = _factor(layer, p, "shrink_factor")
        out_h, out_w = (h_eff - 1) // shrink + 1, (w_eff - 1) // shrink + 1
    elif has["zoom_factor"] and not has["shrink_factor"]:
        zoom = _factor(layer, p, "zoom_factor")
        out_h, out_w = h_eff + (h_eff - 1) * (zoom - 1), w_eff + (w_eff - 1) * (zoom - 1)
    elif has["height"] and has["width"]:
        out_h, out_w = _field(p, "height", 0), _field(p, "width", 0)
    elif has["shrink_factor"] and has["zoom_factor"]:
        shrink, zoom = _factor(layer, p, "shrink_factor"), _factor(layer, p, "zoom_factor")
        out_h, out_w = (h_eff - 1) // shrink + 1, (w_eff - 1) // shrink + 1
        out_h, out_w = out_h + (out_h - 1) * (zoom - 1), out_w + (out_w - 1) * (zoom - 1)
    else:
        raise error(layer, "interp_param needs zoom_factor, shrink_factor, or both height and width")
    if out_h <= 0 or out_w <= 0:
        raise error(layer, f"Interp output size {out_h}x{out_w} must be positive")
    return h_eff, w_eff, out_h, out_w


def _axis_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output position along one axis: the two input indices and their weights, in float32 as Caffe has them."""
    ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0.0)
    pos = ratio * np.arange(size_out, dtype=np.float32)  # float32 * float32, as ``rheight * h2``
    low = pos.astype(np.int64)  # truncation; pos >= 0
    high = low + (low < size_in - 1)
    w_high = pos - low.astype(np.float32)
    w_low = np.float32(1.0) - w_high
    return low, high, w_low, w_high


@register("Interp")
class Interp(LayerType):
    """See the module docstring."""

    param = "interp_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        if len(layer.bottoms) != 1:  # ExactNumBottomBlobs; a fork sizing from a second bottom is not this rule
            raise error(layer, f"Caffe's Interp takes exactly one bottom, this layer has {len(layer.bottoms)}")
        n, c, h, w = _legacy4(layer, bottoms[0])
        _, _, out_h, out_w = interp_size(layer, h, w)
        return [(n, c, out_h, out_w)]

    def unsupported(self, layer: Layer) -> str | None:
        if len(layer.bottoms) != 1:
            return f"Caffe's Interp takes exactly one bottom, this layer has {len(layer.bottoms)}"
        return super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], dtype=np.float32)
        n, c, h, w = _legacy4(layer, x.shape)
        h_eff, w_eff, out_h, out_w = interp_size(layer, h, w)
        start = -_pads(layer, layer.param("interp_param"))[0]
        crop = x.reshape(n, c, h, w)[:, :, start : start + h_eff, start : start + w_eff]
        if (h_eff, w_eff) == (out_h, out_w):
            return [crop.copy()]
        y0, y1, ly0, ly1 = _axis_taps(h_eff, out_h)
        x0, x1, lx0, lx1 = _axis_taps(w_eff, out_w)
        rows0, rows1 = crop[:, :, y0, :], crop[:, :, y1, :]
        top = rows0[:, :, :, x0] * lx0 + rows0[:, :, :, x1] * lx1  # per row: lx0 * p[., x0] + lx1 * p[., x1]
        bottom = rows1[:, :, :, x0] * lx0 + rows1[:, :, :, x1] * lx1
        out = ly0[:, None] * top + ly1[:, None] * bottom
        return [out.astype(np.float32, copy=False)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        parts = []
        if "zoom_factor" in p:
            parts.append(f"zoom={p['zoom_factor']}")
        if "shrink_factor" in p:
            parts.append(f"shrink={p['shrink_factor']}")
        if "height" in p or "width" in p:
            parts.append(f"size={p.get('height', '?')}x{p.get('width', '?')}")
        if p.get("pad_beg") or p.get("pad_end"):
            parts.append(f"pad={p.get('pad_beg', 0)},{p.get('pad_end', 0)}")
        return " ".join(parts)
