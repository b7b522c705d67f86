"""Dropout: the identity at TEST time (Caffe scales at train time, by 1 / (1 - ratio), so nothing is rescaled here)."""

from __future__ import annotations

from caffeport.layers.registry import SameShape, register


@register("Dropout")
class Dropout(SameShape):
    param = "dropout_param"
