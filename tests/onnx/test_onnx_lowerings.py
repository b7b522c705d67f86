"""Per-lowering tests on tiny hand-made nets, for every trap caffeport.run handles: the lowering must give the
reference's values (caffeport.run, verified against Caffe and OpenCV 4) on every tensor, at 1e-4 relative.

Where ONNX's obvious spelling of a layer differs from Caffe, the test also shows that it does (the trap is real
on that input), so a naive lowering could not pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from caffeport.errors import UnsupportedModelError
from caffeport.ir import Layer
from caffeport.onnx import to_onnx
from tests.onnx.onnx_helpers import export_check, tiny_net

FLT_MAX = float(np.finfo(np.float32).max)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def one(type_: str, x: np.ndarray, *blobs: np.ndarray, tops: int = 1, bottoms: list[str] | None = None,
        extra: dict[str, np.ndarray] | None = None, opset: int = 17, **params: Any) -> list[np.ndarray]:
    """One layer ``L`` fed by ``x`` (and ``extra`` inputs): export, compare every tensor; the reference tops."""
    top_names = [f"t{i}" for i in range(tops)]
    inputs = {"x": x, **(extra or {})}
    layer = Layer(name="L", type=type_, bottoms=bottoms or ["x"], tops=top_names, params=params, blobs=list(blobs))
    want = export_check([layer], inputs, opset=opset)
    return [want[f"L/{t}"] for t in top_names]


def naive(op: onnx.NodeProto, x: np.ndarray, out_shape: list[int] | None = None) -> np.ndarray:
    """``op`` alone on ``x`` in onnxruntime (what a one-to-one lowering would give)."""
    graph = onnx.helper.make_graph([op], "naive", [onnx.helper.make_tensor_value_info("x", 1, list(x.shape))],
                                   [onnx.helper.make_tensor_value_info("y", 1, out_shape)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


# ----------------------------------------------------------------------------- pooling


POOL_CASES = [  # (H, W, params): odd sizes, ceil rounding, with and without pad, the drop rule, floor rounding
    (7, 7, {"kernel_size": 3, "stride": 2}),
    (6, 6, {"kernel_size": 3, "stride": 2, "pad": 1}),            # last window clipped at input + pad
    (5, 7, {"kernel_size": 2, "stride": 2}),                      # ceil: a half window at the end
    (5, 5, {"kernel_size": 3, "stride": 2, "pad": 1}),
    (4, 4, {"kernel_size": 2, "stride": 2, "pad": 1}),            # Caffe drops the window starting in the padding
    (5, 5, {"kernel_size": 1, "stride": 3}),                      # unpadded ceil: a window entirely past the image
    (9, 9, {"kernel_size": 2, "stride": 2, "round_mode": "FLOOR"}),  # the last row is never read
    (7, 9, {"kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 3, "pad_h": 1, "pad_w": 0}),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(("h", "w", "params"), POOL_CASES)
def test_pooling_ceil_rounding_and_padding(method: str, h: int, w: int, params: dict[str, Any]) -> None:
    (top,) = one("Pooling", rand(2, 3, h, w), pooling_param={"pool": method, **params})
    assert np.all(np.isfinite(top)) or method == "MAX"


def test_max_window_past_the_image_is_minus_flt_max() -> None:
    x = rand(1, 2, 5, 5)
    (top,) = one("Pooling", x, pooling_param={"pool": "MAX", "kernel_size": 1, "stride": 3})
    assert top.shape == (1, 2, 3, 3) and np.all(top[:, :, 2, :] == -FLT_MAX)
    # ONNX's ceil_mode drops that window (onnxruntime 1.32 gives 2 x 2): the trap is real
    onnx_way = naive(onnx.helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 1], strides=[3, 3],
                                           ceil_mode=1), x)
    assert onnx_way.shape == (1, 2, 2, 2)


def test_ave_divisor_at_the_clipped_last_window() -> None:
    x = rand(1, 2, 6, 6, seed=3) + 2.0
    (top,) = one("Pooling", x, pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1})
    assert top.shape == (1, 2, 4, 4)
    # Caffe: the last window covers rows 5..7, clipped to input + pad = 7: divisor 2 per axis, not 3
    assert np.isclose(top[0, 0, 3, 3], x[0, 0, 5, 5] / 4, rtol=1e-6)


def test_no_lowering_relies_on_ceil_mode_or_count_include_pad() -> None:
    """Runtimes differ there (onnxruntime before the ONNX spec's fix, OpenCV): every pad is explicit instead."""
    for h, w, params in POOL_CASES:
        for method in ("MAX", "AVE"):
            layer = Layer("L", "Pooling", ["x"], ["t"], {"pooling_param": {"pool": method, **params}})
            model = to_onnx(tiny_net([layer], {"x": rand(1, 2, h, w)}))
            for node in model.graph.node:
                attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
                assert attrs.get("ceil_mode", 0) == 0 and attrs.get("count_include_pad", 0) == 0, node


def test_global_pooling() -> None:
    one("Pooling", rand(2, 3, 5, 7), pooling_param={"pool": "MAX", "global_pooling": True})
    one("Pooling", rand(2, 3, 5, 7), pooling_param={"pool": "AVE", "global_pooling": True})


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_spp(method: str) -> None:
    (top,) = one("SPP", rand(2, 3, 7, 9), spp_param={"pool": method, "pyramid_height": 3})
    assert top.shape == (2, 3 * (1 + 4 + 16))


# ----------------------------------------------------------------------------- convolution


def test_grouped_dilated_convolution_and_depthwise() -> None:
    one("Convolution", rand(2, 4, 9, 8), rand(6, 2, 3, 3, seed=1), rand(6, seed=2),
        convolution_param={"num_output": 6, "kernel_size": 3, "group": 2, "stride": 2, "pad": 1, "dilation": 2})
    one("Convolution", rand(1, 4, 7, 7), rand(8, 1, 3, 3, seed=1),
        convolution_param={"num_output": 8, "kernel_size": 3, "group": 4, "bias_term": False})
    one("ConvolutionDepthwise", rand(1, 3, 6, 6), rand(3, 1, 3, 3, seed=1), rand(3, seed=2),
        convolution_param={"kernel_size": 3, "pad": 1})


def test_grouped_deconvolution_stays_grouped() -> None:
    x, w, b = rand(2, 4, 5, 6), rand(4, 3, 4, 3, seed=1), rand(6, seed=2)  # (C, O / group, kh, kw), group 2
    params = {"num_output": 6, "kernel_h": 4, "kernel_w": 3, "group": 2, "stride": 2, "pad": 1}
    (top,) = one("Deconvolution", x, w, b, convolution_param=params)
    assert top.shape == (2, 6, 2 * 4 + 4 - 2, 2 * 5 + 3 - 2)
    model = to_onnx(tiny_net([Layer("L", "Deconvolution", ["x"], ["t0"], {"convolution_param": params}, [w, b])],
                             {"x": x}))
    (node,) = [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert {a.name: a.i for a in node.attribute}["group"] == 2


# ----------------------------------------------------------------------------- normalization


@pytest.mark.parametrize("factor", [0.0, 123.4, 1.0])
def test_batchnorm_scale_factor(factor: float) -> None:
    mean, var = rand(3, seed=1) * factor, np.abs(rand(3, seed=2)) * factor + 0.5
    (top,) = one("BatchNorm", rand(2, 3, 4, 4), mean, var, np.array([factor], np.float32),
                 batch_norm_param={"eps": 1e-3})
    if factor == 0:  # Caffe takes the statistics as zeros: x / sqrt(eps)
        assert np.allclose(top, rand(2, 3, 4, 4) / np.sqrt(np.float32(1e-3)), rtol=1e-5)


def test_batchnorm_batch_statistics_and_2d_input() -> None:
    blobs = (rand(3), np.abs(rand(3)) + 1, np.array([1.0], np.float32))
    one("BatchNorm", rand(4, 3, 5, 2), *blobs, batch_norm_param={"use_global_stats": False})
    one("BatchNorm", rand(4, 3), *blobs, batch_norm_param={})


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("size", [3, 5, 7])
def test_lrn_at_channel_and_image_edges(region: str, size: int) -> None:
    x = rand(2, 4, 5, 5) * 3
    (top,) = one("LRN", x, lrn_param={"norm_region": region, "local_size": size, "alpha": 0.9, "beta": 0.75,
                                      "k": 2.0})
    if region == "ACROSS_CHANNELS":  # channel 0 sees channels 0..(size-1)/2 only; alpha divided by size
        window = x[:, : (size - 1) // 2 + 1]
        want0 = x[:, 0] * (2.0 + 0.9 / size * (window**2).sum(axis=1)) ** -0.75
        assert np.allclose(top[:, 0], want0, rtol=1e-5)


def test_mvn_and_normalize() -> None:
    for params in ({}, {"across_channels": True}, {"normalize_variance": False}, {"eps": 0.5}):
        one("MVN", rand(2, 3, 4, 5), mvn_param=params)
    one("MVN", rand(2, 6), mvn_param={})
    one("Normalize", rand(2, 3, 4, 5), np.array(2.5, np.float32), norm_param={})
    one("Normalize", rand(2, 3, 4, 5), rand(3, seed=4),
        norm_param={"across_spatial": False, "channel_shared": False, "eps": 1e-2})


# ----------------------------------------------------------------------------- element-wise


def test_eltwise_coefficients_and_operations() -> None:
    a, b, c = rand(2, 3, 4), rand(2, 3, 4, seed=1), rand(2, 3, 4, seed=2)
    extra = {"b": b, "c": c}
    (diff,) = one("Eltwise", a, bottoms=["x", "b"], extra={"b": b}, eltwise_param={"coeff": [1.0, -1.0]})
    assert np.array_equal(diff, a - b)
    one("Eltwise", a, bottoms=["x", "b", "c"], extra=extra, eltwise_param={"coeff": [0.5, 2.0, -3.0]})
    one("Eltwise", a, bottoms=["x", "b", "c"], extra=extra, eltwise_param={"operation": "PROD"})
    one("Eltwise", a, bottoms=["x", "b", "c"], extra=extra, eltwise_param={"operation": "MAX"})


def test_prelu_channel_shared_and_per_channel() -> None:
    (top,) = one("PReLU", rand(2, 3, 4, 4), np.array(0.25, np.float32), prelu_param={"channel_shared": True})
    x = rand(2, 3, 4, 4)
    assert np.array_equal(top, np.where(x > 0, x, np.float32(0.25) * x))
    one("PReLU", rand(2, 3, 4, 4), rand(3, seed=1))
    one("PReLU", rand(5, 3), rand(3, seed=1))


@pytest.mark.parametrize(("type_", "params"), [
    ("ReLU", {}), ("ReLU", {"relu_param": {"negative_slope": 0.1}}), ("ReLU6", {}), ("Sigmoid", {}), ("TanH", {}),
    ("AbsVal", {}), ("ELU", {"elu_param": {"alpha": 0.7}}), ("BNLL", {}), ("Swish", {"swish_param": {"beta": 1.5}}),
    ("Threshold", {"threshold_param": {"threshold": 0.3}}), ("Dropout", {"dropout_param": {"dropout_ratio": 0.5}}),
    ("Power", {"power_param": {"power": 2.0, "scale": 0.5, "shift": 3.0}}), ("Power", {"power_param": {"scale": 0}}),
    ("Power", {"power_param": {"power": 0.0}}), ("Power", {}),
    ("Exp", {"exp_param": {"base": 2.0, "scale": 0.5, "shift": 1.0}}), ("Exp", {}),
    ("Log", {"log_param": {"base": 10.0, "scale": 2.0, "shift": 9.0}}), ("Log", {"log_param": {"shift": 5.0}}),
    ("Clip", {"clip_param": {"min": -0.5, "max": 0.25}}),
])
def test_activations(type_: str, params: dict[str, Any]) -> None:
    x = rand(2, 3, 4, 5) * 3
    x[0, 0, 0, :3] = [80.0, -80.0, 0.0]  # BNLL and Sigmoid far out, where a naive softplus would overflow
    if type_ == "Log":
        x = np.abs(x) + 0.1  # finite logarithms (NaN compares as a failure)
    one(type_, x, **params)


def test_clip_maps_nan_to_min_as_caffe() -> None:
    x = rand(1, 4)
    x[0, 1] = np.nan
    net = tiny_net([Layer("L", "Clip", ["x"], ["t"], {"clip_param": {"min": -0.5, "max": 0.25}})], {"x": x})
    session = ort.InferenceSession(to_onnx(net).SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    assert got[0, 1] == np.float32(-0.5)


# ----------------------------------------------------------------------------- shapes and data movement


def test_crop_offsets() -> None:
    ref = np.zeros((2, 3, 4, 5), np.float32)
    (top,) = one("Crop", rand(2, 3, 7, 9), bottoms=["x", "r"], extra={"r": ref}, crop_param={"offset": [1, 3]})
    assert np.array_equal(top, rand(2, 3, 7, 9)[:, :, 1:5, 3:8])
    one("Crop", rand(2, 5, 7, 9), bottoms=["x", "r"], extra={"r": ref}, crop_param={"axis": 1, "offset": 1})


@pytest.mark.parametrize("params", [
    {"zoom_factor": 2}, {"zoom_factor": 3, "pad_beg": -1, "pad_end": -1}, {"shrink_factor": 2},
    {"height": 7, "width": 1}, {"height": 1, "width": 9}, {"height": 9, "width": 11, "pad_beg": -2},
    {"shrink_factor": 2, "zoom_factor": 3}, {"height": 6, "width": 7},  # the same size: a copy
])
def test_interp(params: dict[str, Any]) -> None:
    one("Interp", rand(2, 3, 6, 7), interp_param=params)


def test_interp_pad_beg_crops_before_resizing() -> None:
    x = rand(1, 1, 6, 6)
    (top,) = one("Interp", x, interp_param={"zoom_factor": 2, "pad_beg": -1, "pad_end": -1})
    assert top.shape == (1, 1, 7, 7) and top[0, 0, 0, 0] == x[0, 0, 1, 1] and top[0, 0, -1, -1] == x[0, 0, 4, 4]


def test_softmax_axis() -> None:
    (top,) = one("Softmax", rand(2, 3, 4, 5), softmax_param={"axis": 2})
    assert np.allclose(top.sum(axis=2), 1, atol=1e-6)
    one("Softmax", rand(2, 3, 4, 5), softmax_param={"axis": -1})


def test_inner_product_axes_and_transpose() -> None:
    one("InnerProduct", rand(2, 3, 4, 5), rand(6, 60, seed=1), rand(6, seed=2), inner_product_param={"num_output": 6})
    one("InnerProduct", rand(2, 3, 4, 5), rand(20, 6, seed=1), rand(6, seed=2),
        inner_product_param={"num_output": 6, "axis": 2, "transpose": True})
    one("InnerProduct", rand(2, 7), rand(4, 7, seed=1), inner_product_param={"num_output": 4, "bias_term": False})


def test_scale_and_bias_axis_num_axes() -> None:
    one("Scale", rand(2, 3, 4, 5), rand(3, 4, seed=1), rand(3, 4, seed=2),
        scale_param={"axis": 1, "num_axes": 2, "bias_term": True})
    one("Scale", rand(2, 3, 4, 5), rand(4, 5, seed=1), scale_param={"axis": -2, "num_axes": -1})
    one("Scale", rand(2, 3, 4, 5), np.array(1.5, np.float32), scale_param={"num_axes": 0})
    one("Scale", rand(2, 3, 4, 5), bottoms=["x", "f"], extra={"f": rand(3, 4, seed=3)}, scale_param={"num_axes": 2})
    one("Bias", rand(2, 3, 4, 5), rand(3, seed=1))
    one("Bias", rand(2, 3, 4, 5), bottoms=["x", "f"], extra={"f": rand(2, 3, seed=3)}, bias_param={"axis": 0,
                                                                                                    "num_axes": 2})


def test_flatten_reshape_permute_concat_slice_tile() -> None:
    x = rand(2, 3, 4, 5)
    one("Flatten", x)
    one("Flatten", x, flatten_param={"axis": 1, "end_axis": 2})
    one("Reshape", x, reshape_param={"shape": {"dim": [0, -1, 5]}})
    one("Reshape", x, reshape_param={"shape": {"dim": [2, 2]}, "axis": 2, "num_axes": 1})
    one("Reshape", x, reshape_param={"shape": {"dim": [1, 1]}, "axis": -1})
    one("Permute", x, permute_param={"order": [0, 2, 3, 1]})
    one("Permute", x, permute_param={"order": [3, 0]})
    one("Concat", x, bottoms=["x", "y"], extra={"y": rand(2, 3, 1, 5)}, concat_param={"axis": 2})
    one("Concat", x, concat_param={"concat_dim": 1})
    parts = one("Slice", x, tops=3, slice_param={"axis": 3, "slice_point": [1, 3]})
    assert [p.shape[3] for p in parts] == [1, 2, 2]
    one("Slice", x, tops=3, slice_param={"slice_dim": 1})
    one("Split", x, tops=2)
    (tiled,) = one("Tile", rand(2, 2), tile_param={"axis": 1, "tiles": 3})
    assert np.array_equal(tiled, np.tile(rand(2, 2), (1, 3)))


def test_shuffle_channel_reorg_upsample() -> None:
    one("ShuffleChannel", rand(2, 6, 3, 4), shuffle_channel_param={"group": 3})
    one("Reorg", rand(1, 8, 4, 6), reorg_param={"stride": 2})
    one("Reorg", rand(1, 8, 4, 6), reorg_param={"stride": 2, "reverse": True})
    (up,) = one("Upsample", rand(1, 2, 3, 4), upsample_param={"scale": 2})
    assert np.array_equal(up, rand(1, 2, 3, 4).repeat(2, axis=2).repeat(2, axis=3))


def test_argmax_ties_put_the_larger_index_first() -> None:
    x = np.array([[[[1.0]], [[3.0]], [[3.0]], [[2.0]], [[3.0]]]], np.float32)  # (1, 5, 1, 1): 3 at 1, 2 and 4
    (top,) = one("ArgMax", x, argmax_param={"axis": 1, "top_k": 2})
    assert top.ravel().tolist() == [4.0, 2.0]
    (both,) = one("ArgMax", rand(2, 3, 4), argmax_param={"top_k": 3, "out_max_val": True})
    assert both.shape == (2, 2, 3)
    one("ArgMax", rand(2, 3, 4), argmax_param={"top_k": 2, "axis": -1, "out_max_val": True})
    one("ArgMax", rand(2, 3, 4, 5), argmax_param={})


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
def test_reductions_at_each_axes_spelling(opset: int) -> None:
    for op in ("SUM", "ASUM", "SUMSQ", "MEAN"):
        one("Reduction", rand(2, 3, 4), reduction_param={"operation": op, "axis": 1, "coeff": 0.5}, opset=opset)
    one("Reduction", rand(2, 3, 4), reduction_param={}, opset=opset)  # axis 0: a 0-D top
    one("MVN", rand(2, 3, 4, 5), mvn_param={}, opset=opset)
    one("Normalize", rand(2, 3, 4, 5), np.array(2.0, np.float32), norm_param={}, opset=opset)
    one("Slice", rand(2, 6), tops=2, slice_param={"slice_point": [2]}, opset=opset)


def test_embed() -> None:
    x = np.array([[0, 3], [19, 7]], np.float32)
    one("Embed", x, rand(20, 4, seed=1), rand(4, seed=2), embed_param={"input_dim": 20, "num_output": 4})


def test_dummy_data_and_silence() -> None:
    x = rand(2, 3)
    layers = [Layer("d", "DummyData", [], ["c"], {"dummy_data_param": {"shape": {"dim": [2, 3]},
                                                                       "data_filler": {"type": "constant",
                                                                                       "value": 1.5}}}),
              Layer("e", "Eltwise", ["x", "c"], ["s"], {}), Layer("q", "Silence", ["c"], [], {})]
    want = export_check(layers, {"x": x})
    assert np.array_equal(want["e/s"], x + 1.5)


# ----------------------------------------------------------------------------- recurrent


def _cont() -> np.ndarray:
    return np.array([[0, 0], [1, 1], [1, 0], [1, 1], [0, 1]], np.float32)  # restarts at t=2 and t=4


def test_lstm_with_cont_restarts_static_input_and_exposed_states() -> None:
    t, n, i, h = 5, 2, 3, 4
    x = rand(t, n, i)
    blobs = [rand(4 * h, i, seed=1), rand(4 * h, seed=2), rand(4 * h, h, seed=3)]
    (hs,) = one("LSTM", x, *blobs, bottoms=["x", "cont"], extra={"cont": _cont()},
                recurrent_param={"num_output": h})
    assert hs.shape == (t, n, h)
    static = [rand(4 * h, i, seed=1), rand(4 * h, seed=2), rand(4 * h, 6, seed=4), rand(4 * h, h, seed=3)]
    one("LSTM", x, *static, bottoms=["x", "cont", "s", "h0", "c0"], tops=3,
        extra={"cont": _cont(), "s": rand(n, 6, seed=5), "h0": rand(1, n, h, seed=6), "c0": rand(1, n, h, seed=7)},
        recurrent_param={"num_output": h, "expose_hidden": True})


def test_rnn_with_cont_restarts() -> None:
    t, n, i, h = 5, 2, 3, 4
    blobs = [rand(h, i, seed=1), rand(h, seed=2), rand(h, h, seed=3), rand(h, h, seed=4), rand(h, seed=5)]
    one("RNN", rand(t, n, i), *blobs, bottoms=["x", "cont"], extra={"cont": _cont()},
        recurrent_param={"num_output": h})
    one("RNN", rand(t, n, i), *blobs, bottoms=["x", "cont", "h0"], tops=2,
        extra={"cont": _cont(), "h0": rand(1, n, h, seed=6)}, recurrent_param={"num_output": h, "expose_hidden": True})


# ----------------------------------------------------------------------------- naming and refusals


def test_in_place_writers_get_layer_slash_top_and_the_last_one_the_top() -> None:
    x = rand(2, 3)
    layers = [Layer("a", "AbsVal", ["x"], ["y"]), Layer("r", "ReLU", ["y"], ["y"]), Layer("s", "Sigmoid", ["y"], ["y"]),
              Layer("o", "TanH", ["y"], ["z"])]
    net = tiny_net(layers, {"x": x})
    model = to_onnx(net)
    names = {out for node in model.graph.node for out in node.output}
    assert {"a/y", "r/y", "y", "z"} <= names and "s/y" not in names
    assert [o.name for o in model.graph.output] == ["z"]
    export_check(layers, {"x": x})


def test_an_input_rewritten_in_place_keeps_its_name_for_the_input() -> None:
    layers = [Layer("r", "ReLU", ["x"], ["x"]), Layer("t", "TanH", ["x"], ["x"])]
    net = tiny_net(layers, {"x": rand(2, 3)})
    model = to_onnx(net)
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["t/x"]
    export_check(layers, {"x": rand(2, 3)})


def test_every_layer_without_an_exact_lowering_is_listed_at_once() -> None:
    x = rand(1, 2, 6, 6)
    layers = [
        Layer("stoch", "Pooling", ["x"], ["p"], {"pooling_param": {"pool": "STOCHASTIC", "kernel_size": 2}}),
        Layer("masked", "Pooling", ["x"], ["m", "idx"], {"pooling_param": {"pool": "MAX", "kernel_size": 2,
                                                                           "stride": 2}}),
        Layer("prior", "DetectionOutput", ["x", "x", "x"], ["det"], {"detection_output_param": {
            "num_classes": 2, "nms_param": {"eta": 0.5}}}),
        Layer("weird", "MyCustomLayer", ["x"], ["w"], {}),
        Layer("unpool", "Upsample", ["m", "idx"], ["u"], {"upsample_param": {"scale": 2}}),
        Layer("fine", "ReLU", ["x"], ["ok"], {}),
    ]
    net = tiny_net(layers, {"x": x})
    with pytest.raises(UnsupportedModelError) as info:
        to_onnx(net)
    message = str(info.value)
    for name in ("stoch", "masked", "prior", "weird", "unpool"):
        assert repr(name) in message
    assert "'fine'" not in message and "cannot lower 5 layer(s)" in message
    assert "nms_param.eta 0.5 (adaptive NMS" in message and "STOCHASTIC" in message
