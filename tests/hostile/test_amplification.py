"""A small file must not make caffeport allocate or write gigabytes: grouped Deconvolution's expansion is bounded."""

from __future__ import annotations

import numpy as np
import pytest

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.transforms import transform


def _deconv(group: int, channels: int) -> Net:
    params = {"convolution_param": {"num_output": channels, "kernel_size": [4], "stride": [2], "group": group,
                                    "bias_term": False}}
    layer = Layer("up", "Deconvolution", ["x"], ["y"], params=params,
                  blobs=[np.ones((channels, channels // group, 4, 4), np.float32)],
                  bottom_shapes=[(1, channels, 8, 8)])
    return Net(layers=[layer], inputs={"x": (1, channels, 8, 8)})


def test_a_huge_group_is_refused_naming_the_layer() -> None:
    """group 16384 on a 1 MiB kernel would be a 16 GiB block-diagonal Keras kernel."""
    with pytest.raises(ModelStructureError, match=r"layer 'up': Deconvolution group 16384: .* 16,384 times"):
        transform(_deconv(16384, 16384), "tensorflow")


def test_the_torch_backend_keeps_groups_and_so_converts_it() -> None:
    out = transform(_deconv(16384, 16384), "torch")
    assert out.layer("up").blobs[0].shape == (16384, 1, 4, 4)


def test_an_fcn_style_upsampling_deconvolution_still_expands() -> None:
    """FCN's upscore: group = channels = 21, a 21x expansion of a small kernel, is what users have."""
    out = transform(_deconv(21, 21), "tensorflow")
    assert out.layer("up").blobs[0].shape == (4, 4, 21, 21)
