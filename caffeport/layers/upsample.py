"""Upsample: two unrelated fork layers share this type name; the number of bottoms tells them apart.

**One bottom: YOLOv3 nearest-neighbour upsampling.** Source:
``caffe_layers/upsample_layer/upsample_layer.cpp`` of ChenYingpeng/darknet2caffe
(the layer ChenYingpeng/caffe-yolov3's prototxts use; eric612/MobileNet-YOLO
carries the same code). ``upsample_param { scale }`` (int32, default 1 in that
fork's proto). ``Reshape`` multiplies the last two axes by ``scale``; the
forward (4-D) copies ``out[n, c, y, x] = in[n, c, y // scale, x // scale]``.
That fork's ``UpsampleParameter`` has ``scale`` only, so a one-bottom layer
that sets SegNet's ``upsample_h``/``upsample_w``/``scale_h``/``scale_w`` came
from neither fork and is refused rather than guessed at.

**Two bottoms: SegNet max-unpooling.** Source: ``src/caffe/layers/upsample_layer.cpp``
of alexgkendall/caffe-segnet. Bottom 1 is the argmax mask of a MAX Pooling
layer's second top; it must have bottom 0's shape, both 4-D. Size
(``LayerSetUp``/``Reshape``): ``upsample_h`` and ``upsample_w`` (both ``> 1``)
when both are given; else ``scale_h``/``scale_w`` (both, ``> 1``, only when
``scale`` is not given) or ``scale`` (default 2, ``> 1``) for both axes, and
``out = in * scale - pad_out`` with the bools ``pad_out_h``/``pad_out_w``
(each allowed only with a scale of 2 on its axis). Setting ``scale_h`` or
``scale_w`` alongside ``scale``, or only one of them, is a fatal error unless
``upsample_h``/``upsample_w`` are set. Forward: the top is zero, then for every
(n, c) plane and every input position ``i`` in order, ``top[int(mask[i])] = bottom[i]``
(the mask's float truncated to int, an index into the output plane; a later
``i`` wins where two share an index; an index past the plane is fatal).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error
from caffeport.layers.registry import LayerType, Tops, Unsupported, register

#: SegNet's size fields; the YOLO fork's UpsampleParameter has none of them
_SEGNET_FIELDS = ("upsample_h", "upsample_w", "scale_h", "scale_w", "pad_out_h", "pad_out_w")


def _has(p: dict[str, Any], key: str) -> bool:
    return p.get(key) is not None


def _field(p: dict[str, Any], key: str, default: int) -> int:
    """An optional scalar field (bools as 0/1); a field given twice keeps its last value, as protobuf does."""
    value = p.get(key)
    if isinstance(value, (list, tuple)):
        value = value[-1] if value else None
    if value is None:
        return default
    if isinstance(value, str):  # a bool spelled out in a hand-built dict
        return int(value.lower() in ("true", "1"))
    return int(value)


def nearest_scale(layer: Layer) -> int:
    """The one-bottom (YOLO) layer's ``scale``; refuses SegNet-only fields that fork's proto does not have."""
    p = layer.param("upsample_param")
    stray = [key for key in _SEGNET_FIELDS if _has(p, key)]
    if stray:
        raise error(layer, f"a one-bottom Upsample (YOLOv3's nearest) reads only scale; {', '.join(stray)} "
                           "belong to SegNet's two-bottom unpooling Upsample")
    scale = _field(p, "scale", 1)
    if scale < 1:
        raise error(layer, f"upsample_param.scale must be >= 1, got {scale}")
    return scale


def unpool_size(layer: Layer, height: int, width: int) -> tuple[int, int]:
    """SegNet's output height and width for an input plane of ``height`` x ``width``."""
    p = layer.param("upsample_param")
    has_h, has_w = _has(p, "upsample_h"), _has(p, "upsample_w")
    has_sh, has_sw, has_scale = _has(p, "scale_h"), _has(p, "scale_w"), _has(p, "scale")
    if not ((has_h and has_w) or (not has_scale and has_sh and has_sw) or (not has_sh and not has_sw)):
        raise error(layer, "upsample_param needs upsample_h and upsample_w, else scale, or scale_h and scale_w "
                           "without scale")
    if has_h and has_w:
        out_h, out_w = _field(p, "upsample_h", 0), _field(p, "upsample_w", 0)
        if out_h <= 1 or out_w <= 1:
            raise error(layer, f"upsample_h {out_h} and upsample_w {out_w} must be > 1")
        return out_h, out_w
    if has_sh:
        scale_h, scale_w = _field(p, "scale_h", 0), _field(p, "scale_w", 0)
    else:
        scale_h = scale_w = _field(p, "scale", 2)
    if scale_h <= 1 or scale_w <= 1:
        raise error(layer, f"Upsample scale {scale_h}x{scale_w} must be > 1")
    pad_h, pad_w = _field(p, "pad_out_h", 0), _field(p, "pad_out_w", 0)
    if (pad_h and scale_h != 2) or (pad_w and scale_w != 2):
        raise error(layer, "pad_out_h / pad_out_w need a scale of 2 on their axis")
    return height * scale_h - int(bool(pad_h)), width * scale_w - int(bool(pad_w))


@register("Upsample")
class Upsample(LayerType):
    """See the module docstring."""

    param = "upsample_param"
    bottoms = None  # SegNet's form reads (and checks) its mask's shape too

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        if len(bottoms) == 1:
            scale = nearest_scale(layer)
            if len(shape) < 2:
                raise error(layer, f"Upsample scales the last two axes; the input {shape} has fewer")
            return [(*shape[:-2], shape[-2] * scale, shape[-1] * scale)]
        if len(bottoms) != 2:
            raise error(layer, f"Upsample takes one bottom (nearest) or two (SegNet: data and mask), "
                               f"got {len(bottoms)}")
        mask = bottoms[1]
        if len(shape) != 4 or len(mask) != 4:
            raise error(layer, f"SegNet's Upsample needs 4-D data and mask, got {shape} and {mask}")
        if mask != shape:
            raise error(layer, f"SegNet's Upsample mask {mask} must have the data's shape {shape}")
        out_h, out_w = unpool_size(layer, shape[2], shape[3])
        return [(shape[0], shape[1], out_h, out_w)]

    def unsupported(self, layer: Layer) -> str | None:
        if len(layer.bottoms) not in (1, 2):
            return f"Upsample takes one bottom (nearest) or two (SegNet unpooling), not {len(layer.bottoms)}"
        return super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], dtype=np.float32)
        if len(bottoms) == 1:
            scale = nearest_scale(layer)
            if x.ndim != 4:
                raise Unsupported(f"the YOLO Upsample forward is 4-D (N, C, H, W); the input is {x.ndim}-D")
            return [np.repeat(np.repeat(x, scale, axis=2), scale, axis=3)]
        (top_shape,) = self.infer(layer, [x.shape, np.shape(bottoms[1])]) or [None]
        assert top_shape is not None
        return [self._unpool(layer, x, np.asarray(bottoms[1]), top_shape)]

    @staticmethod
    def _unpool(layer: Layer, x: np.ndarray, mask: np.ndarray, top_shape: Shape) -> np.ndarray:
        n, c, h, w = x.shape
        plane = top_shape[2] * top_shape[3]
        masks = np.asarray(mask, dtype=np.float64).reshape(n * c, h * w)
        if not np.isfinite(masks).all():
            raise ValueError("the Upsample mask holds NaN or infinite indices")
        index = np.trunc(masks).astype(np.int64)  # static_cast<int>: towards zero
        bad = (index < 0) | (index >= plane)
        if bad.any():
            raise ValueError(f"Upsample mask index {int(index[bad][0])} is outside the {top_shape[2]}x"
                             f"{top_shape[3]} output plane (the pooling that made the mask does not match "
                             "this layer's scale)")
        flat = (index + plane * np.arange(n * c, dtype=np.int64)[:, None]).ravel()
        values = x.reshape(-1)
        # Caffe writes in input order, so the last position with a given index wins: keep only that one
        last = len(flat) - 1 - np.unique(flat[::-1], return_index=True)[1]
        out = np.zeros(n * c * plane, dtype=np.float32)
        out[flat[last]] = values[last]
        return out.reshape(top_shape)

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        if len(layer.bottoms) >= 2:
            if _has(p, "upsample_h") or _has(p, "upsample_w"):
                return f"unpool {p.get('upsample_h', '?')}x{p.get('upsample_w', '?')}"
            if _has(p, "scale_h") or _has(p, "scale_w"):
                return f"unpool scale={p.get('scale_h', '?')}x{p.get('scale_w', '?')}"
            return f"unpool scale={p.get('scale', 2)}"
        return f"nearest scale={p.get('scale', 1)}"
