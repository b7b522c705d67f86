"""ShuffleChannel: ShuffleNet's channel shuffle (``shuffle_channel_param { group }``).

Source: ``shuffle_channel_layer.cpp`` of farmingyard/ShuffleNet (based on
camel007/Caffe-ShuffleNet; the copies in other forks are the same).
``group`` (uint32, default 1) must be positive and divide the channels
(``Forward_cpu`` CHECKs it). ``Reshape`` gives the top the bottom's legacy
4-D shape ``(num, channels, height, width)``. Forward, per image: the
channels are a ``group`` x ``C / group`` matrix of planes (row ``i``, column
``j`` is input channel ``i * (C / group) + j``) that is transposed: input
channel ``i * (C / group) + j`` goes to output channel ``j * group + i``.
In array terms: reshape ``(N, group, C / group, S)``, swap those two axes,
reshape back.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, ints
from caffeport.layers.registry import LayerType, Tops, register


def _legacy4(layer: Layer, shape: Shape) -> tuple[int, int, int, int]:
    if len(shape) > 4:
        raise error(layer, f"ShuffleChannel reshapes its top to num/channels/height/width, which a "
                           f"{len(shape)}-D input does not have")
    n, c, h, w = (*shape, 1, 1, 1, 1)[:4]
    return n, c, h, w


def shuffle_group(layer: Layer, channels: int | None = None) -> int:
    """The ``group``, checked positive and (when ``channels`` is known) a divisor of the channels."""
    values = ints(layer.param("shuffle_channel_param").get("group"))
    group = values[-1] if values else 1
    if group <= 0:
        raise error(layer, f"shuffle_channel_param.group must be > 0, got {group}")
    if channels is not None and channels % group:
        raise error(layer, f"ShuffleChannel group {group} does not divide the {channels} channels")
    return group


@register("ShuffleChannel")
class ShuffleChannel(LayerType):
    """See the module docstring."""

    param = "shuffle_channel_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = _legacy4(layer, bottoms[0])
        shuffle_group(layer, shape[1])
        return [shape]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], dtype=np.float32)
        n, c, h, w = _legacy4(layer, x.shape)
        group = shuffle_group(layer, c)
        out = x.reshape(n, group, c // group, h * w).transpose(0, 2, 1, 3)
        return [np.ascontiguousarray(out).reshape(n, c, h, w)]

    def key_params(self, layer: Layer) -> str:
        return f"group={self.params_of(layer).get('group', 1)}"
