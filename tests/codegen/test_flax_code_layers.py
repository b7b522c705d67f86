"""``-f flax-code`` for the layer types and forms the shared models lack, on synthetic nets with random weights.

The nets are the torch-code layer tests' (`tests.codegen.test_torch_code_layers.build`: a deploy prototxt and a
caffemodel of random blobs written by the ``caffe`` format); each test generates its nets, lints them and runs them
all in one fresh interpreter without caffeport, comparing every top with caffeport.run at 1e-4 relative. Odd sizes
and paddings exercise Caffe's ceil pooling with its clipped last window and AVE divisor in NHWC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from tests.codegen.codegen_helpers import ruff_check
from tests.codegen.flax_code_helpers import run_flax_generated
from tests.codegen.test_torch_code_layers import POOL, build
from tests.codegen.test_torch_code_models import _folded_batchnorms
from tests.proof.reference_nets import assert_close


def check(tmp_path: Path, nets: list[tuple[str, dict[str, tuple[int, ...]]]],
          expect: tuple[str, ...] = ()) -> list[str]:
    """Generate, lint, run standalone (one interpreter) and compare every top of each net; the model.py sources."""
    runs, cases, sources = [], [], []
    for index, (body, inputs) in enumerate(nets):
        folder = tmp_path / f"net{index}"
        folder.mkdir()
        caffemodel, prototxt = build(folder, body, inputs)
        out = folder / "model"
        result = caffeport.convert(caffemodel, prototxt, out, format="flax-code")
        assert not [w for w in result.warnings if "flax-code" in w], result.warnings
        ruff_check(out / "model.py")
        net = caffeport.read(caffemodel, prototxt)
        rng = np.random.default_rng(5)
        values = {k: rng.uniform(-2.0, 2.0, size=shape).astype(np.float32) for k, shape in net.inputs.items()}
        runs.append((out, values, list(net.inputs)))
        cases.append((net, values))
        sources.append((out / "model.py").read_text())
    for (net, values), (got, plain) in zip(cases, run_flax_generated(runs), strict=True):
        want = caffeport.run(net, values, all_layers=True)
        assert plain == sorted(caffeport.forward.net_outputs(net))
        folded = _folded_batchnorms(net)
        expected = {k for k in want if k.partition("/")[0] not in folded}
        assert set(got) == expected, (sorted(set(got) - expected), sorted(expected - set(got)))
        for key in sorted(expected):
            assert_close(key, got[key], want[key])
        assert len(expected) >= len(net.layers) - len(folded)
    joined = "\n".join(sources)
    for text in expect:
        assert text in joined, text
    return sources


POOL_CASES = [
    ((7, 9), (3, 3), (2, 2), (0, 0)),   # ceil: the last window is clipped (7 -> 3 rows of 3, the last reads 2)
    ((7, 8), (3, 2), (2, 2), (1, 1)),   # padded: Caffe's AVE divisor counts the padding, not past size + pad
    ((6, 5), (2, 3), (3, 2), (1, 0)),   # a last window that would start in the padding is dropped
    ((5, 11), (2, 2), (3, 4), (0, 0)),  # stride > kernel: the last ceil window holds no input at all
    ((13, 13), (3, 3), (2, 2), (1, 1)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_ceil_rounding_clipped_window_and_divisor(tmp_path: Path, method: str) -> None:
    nets = [(POOL.format(method=method, kh=k[0], kw=k[1], sh=s[0], sw=s[1], ph=p[0], pw=p[1]), {"data": (2, 3, *size)})
            for size, k, s, p in POOL_CASES]
    check(tmp_path, nets, expect=("caffe_pool(",))


def test_pooling_floor_and_global(tmp_path: Path) -> None:
    check(tmp_path, [("""
        layer { name: "floor" type: "Pooling" bottom: "data" top: "floor"
          pooling_param { pool: AVE kernel_size: 3 stride: 2 round_mode: FLOOR } }
        layer { name: "gmax" type: "Pooling" bottom: "data" top: "gmax"
          pooling_param { pool: MAX global_pooling: true } }
        layer { name: "gave" type: "Pooling" bottom: "data" top: "gave"
          pooling_param { pool: AVE global_pooling: true } }
    """, {"data": (1, 2, 8, 9)})], expect=("ceil=False", "jnp.max(data, axis=(1, 2), keepdims=True)"))


def test_convolutions_and_deconvolutions_grouped_dilated_per_axis_depthwise(tmp_path: Path) -> None:
    check(tmp_path, [("""
        layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
          convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0
                              dilation: 2 group: 2 } }
        layer { name: "dw" type: "Convolution" bottom: "c1" top: "dw"
          convolution_param { num_output: 6 kernel_size: 3 pad: 1 group: 6 bias_term: false } }
        layer { name: "dwfork" type: "ConvolutionDepthwise" bottom: "dw" top: "dwfork"
          convolution_param { kernel_size: 3 stride: 2 } }
        layer { name: "up" type: "Deconvolution" bottom: "dwfork" top: "up"
          convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
        layer { name: "up_dilated" type: "Deconvolution" bottom: "up" top: "up_dilated"
          convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 3 pad_h: 2 pad_w: 0
                              dilation: 2 bias_term: false } }
    """, {"data": (2, 4, 15, 12)})],
          expect=("feature_group_count=2", "kernel_dilation=(2, 2)", "CaffeDeconv(4, (4, 4)"))


def test_inner_product_axis_activations_and_power(tmp_path: Path) -> None:
    check(tmp_path, [("""
        layer { name: "ip_axis" type: "InnerProduct" bottom: "data" top: "ip_axis"
          inner_product_param { num_output: 5 axis: 2 } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 7 } }
        layer { name: "leaky" type: "ReLU" bottom: "ip" top: "leaky" relu_param { negative_slope: 0.1 } }
        layer { name: "sig" type: "Sigmoid" bottom: "leaky" top: "sig" }
        layer { name: "tanh" type: "TanH" bottom: "leaky" top: "tanh" }
        layer { name: "abs" type: "AbsVal" bottom: "tanh" top: "abs" }
        layer { name: "pow" type: "Power" bottom: "sig" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
        layer { name: "const" type: "Power" bottom: "sig" top: "const" power_param { power: 3 scale: 0 shift: 2 } }
        layer { name: "soft" type: "Softmax" bottom: "ip_axis" top: "soft" softmax_param { axis: -1 } }
    """, {"data": (2, 3, 4, 5)})], expect=("nn.leaky_relu(", "jnp.full_like(", "the NHWC input flattens as it is"))


def test_prelu_batchnorm_alone_scale_and_bias(tmp_path: Path) -> None:
    check(tmp_path, [("""
        layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" }
        layer { name: "shared" type: "PReLU" bottom: "prelu" top: "shared" prelu_param { channel_shared: true } }
        layer { name: "bn" type: "BatchNorm" bottom: "shared" top: "bn" batch_norm_param { eps: 0.002 } }
        layer { name: "relu" type: "ReLU" bottom: "bn" top: "bn" }
        layer { name: "scale2d" type: "Scale" bottom: "bn" top: "scale2d"
          scale_param { axis: 1 num_axes: 2 bias_term: true } }
        layer { name: "bias" type: "Bias" bottom: "scale2d" top: "bias" bias_param { axis: -2 num_axes: 1 } }
        layer { name: "byblob" type: "Scale" bottom: "bias" bottom: "shared" top: "byblob" scale_param { axis: 0 } }
        layer { name: "addblob" type: "Bias" bottom: "byblob" bottom: "bn" top: "addblob" bias_param { axis: 0 } }
    """, {"data": (2, 3, 4, 5)})], expect=("use_scale=False, use_bias=False", "epsilon=0.002",
                                          "CaffeScale((1, 4, 1, 3), use_bias=True)", "ChannelPReLU(())"))


def test_eltwise_concat_slice_split_flatten_reshape_permute_crop_dropout(tmp_path: Path) -> None:
    check(tmp_path, [("""
        layer { name: "split" type: "Split" bottom: "data" top: "a" top: "b" }
        layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "a" top: "sum"
          eltwise_param { coeff: 0.5 coeff: -1 coeff: 2 } }
        layer { name: "prod" type: "Eltwise" bottom: "a" bottom: "sum" top: "prod" eltwise_param { operation: PROD } }
        layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" bottom: "a" top: "max"
          eltwise_param { operation: MAX } }
        layer { name: "cat" type: "Concat" bottom: "sum" bottom: "max" top: "cat" concat_param { axis: 2 } }
        layer { name: "slice" type: "Slice" bottom: "cat" top: "s1" top: "s2" top: "s3"
          slice_param { axis: 2 slice_point: 1 slice_point: 5 } }
        layer { name: "even" type: "Slice" bottom: "cat" top: "e1" top: "e2" slice_param { axis: 1 } }
        layer { name: "flat" type: "Flatten" bottom: "s2" top: "flat" flatten_param { axis: 1 end_axis: 2 } }
        layer { name: "reshape" type: "Reshape" bottom: "flat" top: "reshape"
          reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }
        layer { name: "reshape_axis" type: "Reshape" bottom: "s3" top: "reshape_axis"
          reshape_param { shape { dim: 3 dim: -1 } axis: 2 } }
        layer { name: "reshape4" type: "Reshape" bottom: "e2" top: "reshape4"
          reshape_param { shape { dim: 0 dim: 3 dim: 0 dim: -1 } } }
        layer { name: "perm" type: "Permute" bottom: "e1" top: "perm"
          permute_param { order: 0 order: 3 order: 1 order: 2 } }
        layer { name: "perm2" type: "Permute" bottom: "e1" top: "perm2"
          permute_param { order: 2 order: 0 order: 3 order: 1 } }
        layer { name: "crop" type: "Crop" bottom: "cat" bottom: "s2" top: "crop"
          crop_param { axis: 2 offset: 1 offset: 0 } }
        layer { name: "crop1" type: "Crop" bottom: "cat" bottom: "reshape_axis" top: "crop1" crop_param { offset: 2 } }
        layer { name: "drop" type: "Dropout" bottom: "crop" top: "crop" dropout_param { dropout_ratio: 0.5 } }
    """, {"data": (2, 4, 3, 6)})], expect=("jnp.split(", "to_nchw(", "jnp.maximum("))


def test_lrn_normalize_and_interp(tmp_path: Path) -> None:
    check(tmp_path, [("""
        layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn"
          lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 } }
        layer { name: "lrn5" type: "LRN" bottom: "data" top: "lrn5" lrn_param { local_size: 5 } }
        layer { name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within"
          lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }
        layer { name: "norm" type: "Normalize" bottom: "lrn" top: "norm"
          norm_param { across_spatial: false channel_shared: false } }
        layer { name: "norm_all" type: "Normalize" bottom: "lrn_within" top: "norm_all" }
        layer { name: "zoom" type: "Interp" bottom: "norm" top: "zoom" interp_param { zoom_factor: 3 } }
        layer { name: "shrink" type: "Interp" bottom: "norm_all" top: "shrink"
          interp_param { shrink_factor: 2 pad_beg: 0 pad_end: -1 } }
        layer { name: "sized" type: "Interp" bottom: "norm" top: "sized" interp_param { height: 11 width: 4 } }
    """, {"data": (2, 6, 7, 9)})], expect=("lrn_across_channels(", "lrn_within_channel(", "caffe_interp("))


def test_odd_names_become_identifiers_with_a_name_map(tmp_path: Path) -> None:
    """Caffe names with '/', '-', a leading digit, a keyword, a builtin or a flax Module attribute."""
    (source,) = check(tmp_path, [("""
        layer { name: "conv/1-a" type: "Convolution" bottom: "data" top: "245"
          convolution_param { num_output: 2 kernel_size: 1 } }
        layer { name: "class" type: "ReLU" bottom: "245" top: "lambda" }
        layer { name: "apply" type: "InnerProduct" bottom: "lambda" top: "input" inner_product_param { num_output: 3 } }
        layer { name: "variables" type: "PReLU" bottom: "input" top: "name" }
        layer { name: "9" type: "Softmax" bottom: "name" top: "sum" }
    """, {"data": (1, 2, 3, 3)})])
    assert "'conv/1-a': 'conv_1_a'" in source and "'apply': 'apply_'" in source
    assert "'variables': 'variables_'" in source
    assert "_245 = self.conv_1_a(data)" in source and "input_ = self.apply_(lambda_.reshape(lambda_.shape[0], -1))" \
        in source


def test_detection_output_code_types_separate_locations_keep_top_k_eta_and_no_detection(tmp_path: Path) -> None:
    """The Keras layer tests' DetectionOutput net (CENTER_SIZE with top_k and a keep_top_k cut, CORNER with a
    location per class and an eta-adaptive threshold, CORNER_SIZE with the variance in the target and a threshold
    nothing passes): every top equal to the reference's, the model run without jax.jit (its rows depend on the
    values); under jit the generated helper raises a TypeError saying so."""
    from tests.codegen.flax_code_helpers import run_flax_failure
    from tests.codegen.test_keras_code_layers import DETECTION_INPUTS, DETECTIONS

    (source,) = check(tmp_path, [(DETECTIONS, DETECTION_INPUTS)])
    assert source.count("= caffe_detection_output(") == 3 and "call module.apply without jax.jit" in source
    folder = tmp_path / "net0" / "model"
    error = run_flax_failure(folder, {k: np.zeros(v, np.float32) for k, v in DETECTION_INPUTS.items()},
                             list(DETECTION_INPUTS), jit_only=True)
    assert "TypeError: SSD's DetectionOutput gives as many rows as it detects, which jax.jit cannot trace" in error
