"""Tests for `caffeport.layers.shapes`: one group per rule, then the proof against Caffe's own outputs.

Expected shapes in the unit tests are worked out by hand from Caffe's formulas in
the comment next to each case, so a wrong rule cannot agree with itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers import LAYER_TYPES, LayerType, register
from caffeport.layers.shapes import infer_shapes


def make(type_: str, bottoms: list[str], tops: list[str], name: str = "L", **params: Any) -> Layer:
    return Layer(name=name, type=type_, bottoms=bottoms, tops=tops, params=params)


def run(inputs: dict[str, Shape], *layers: Layer, strict: bool = True) -> Net:
    return infer_shapes(Net(name="t", layers=list(layers), inputs=dict(inputs)), strict=strict)


def tops_of(type_: str, in_shapes: list[Shape], n_tops: int = 1, **params: Any) -> list[Shape | None]:
    """Top shapes of one layer of ``type_`` fed bottoms b0, b1, ... of the given shapes."""
    names = [f"b{i}" for i in range(len(in_shapes))]
    layer = make(type_, names, [f"t{i}" for i in range(n_tops)], **params)
    run(dict(zip(names, in_shapes, strict=True)), layer)
    return layer.top_shapes


def top_of(type_: str, *in_shapes: Shape, **params: Any) -> Shape | None:
    return tops_of(type_, list(in_shapes), **params)[0]


def conv(**kw: Any) -> dict[str, Any]:
    return {"convolution_param": {"group": 1, "axis": 1, "bias_term": True, **kw}}


def pool(**kw: Any) -> dict[str, Any]:
    base = {"pool": "MAX", "pad": 0, "stride": 1, "global_pooling": False, "round_mode": "CEIL"}
    return {"pooling_param": {**base, **kw}}


def expect_error(match: str, type_: str, *in_shapes: Shape, n_tops: int = 1, **params: Any) -> None:
    with pytest.raises(ShapeInferenceError, match=match) as info:
        tops_of(type_, list(in_shapes), n_tops, **params)
    assert info.value.layer == "L"


# ----------------------------------------------------------------------------- walking the net


def test_in_place_layers_update_the_map_and_bottoms_are_recorded() -> None:
    net = run(
        {"x": (2, 3, 8, 8)},
        make("Convolution", ["x"], ["c"], "conv", **conv(num_output=4, kernel_size=[3])),
        make("ReLU", ["c"], ["c"], "relu"),
        make("Pooling", ["c"], ["p"], "pool", **pool(kernel_size=2, stride=2)),
    )
    # conv: (8 - 3)//1 + 1 = 6; pool: ceil((6 - 2)/2) + 1 = 3
    assert net.layer("conv").bottom_shapes == [(2, 3, 8, 8)]
    assert net.layer("relu").bottom_shapes == [(2, 4, 6, 6)]
    assert net.layer("relu").top_shapes == [(2, 4, 6, 6)]
    assert net.layer("pool").top_shapes == [(2, 4, 3, 3)]


def test_unknown_type_gives_unknown_tops_and_unknown_spreads() -> None:
    net = run(
        {"x": (1, 3, 4, 4)},
        make("Python", ["x"], ["y", "z"], "py"),
        make("ReLU", ["y"], ["r"], "relu"),
        make("Eltwise", ["x", "z"], ["s"], "sum"),
    )
    assert net.layer("py").top_shapes == [None, None]
    assert net.layer("relu").bottom_shapes == [None]
    assert net.layer("relu").top_shapes == [None]
    assert net.layer("sum").bottom_shapes == [(1, 3, 4, 4), None]
    assert net.layer("sum").top_shapes == [None]
    assert net.warnings == []


def test_in_place_layer_with_unknown_result_makes_the_blob_unknown() -> None:
    net = run({"x": (1, 2)}, make("Mystery", ["x"], ["x"], "m"), make("ReLU", ["x"], ["y"], "relu"))
    assert net.layer("relu").bottom_shapes == [None]


def test_strict_raises_naming_the_layer() -> None:
    layers = [make("Eltwise", ["a", "b"], ["s"], "sum"), make("ReLU", ["s"], ["r"], "after")]
    with pytest.raises(ShapeInferenceError) as info:
        run({"a": (1, 2, 3), "b": (1, 2, 4)}, *layers, strict=True)
    assert info.value.layer == "sum"
    assert "'sum'" in str(info.value)
    assert "(1, 2, 3)" in str(info.value) and "(1, 2, 4)" in str(info.value)


def test_non_strict_is_the_default_and_warns() -> None:
    layers = [make("Eltwise", ["a", "b"], ["s"], "sum"), make("ReLU", ["s"], ["r"], "after")]
    net = infer_shapes(Net(layers=layers, inputs={"a": (1, 2, 3), "b": (1, 2, 4)}))
    assert len(net.warnings) == 1
    assert net.warnings[0].startswith("layer 'sum': Eltwise bottoms must have the same shape")
    assert net.layer("sum").top_shapes == [None]
    assert net.layer("after").top_shapes == [None]


def test_malformed_parameters_are_a_shape_error_not_a_crash() -> None:
    expect_error("cannot read Convolution parameters", "Convolution", (1, 1, 5, 5), **conv(
        num_output=1, kernel_size=["three"]))


def test_missing_bottoms_is_an_error() -> None:
    with pytest.raises(ShapeInferenceError, match="needs at least 2 bottom"):
        run({"a": (1, 2, 4, 4)}, make("Crop", ["a"], ["c"], "L", crop_param={"axis": 2, "offset": []}))


def test_rule_registry() -> None:
    for t in ("Convolution", "Deconvolution", "Pooling", "PriorBox", "Permute", "LSTM", "Input"):
        assert type(LAYER_TYPES[t]).infer is not LayerType.infer, t
    with pytest.raises(ValueError, match="registered twice"):
        register("ReLU")(type("AnotherReLU", (LayerType,), {}))


# ----------------------------------------------------------------------------- sources


def test_input_one_shape_per_top_and_shared() -> None:
    per_top = make("Input", [], ["a", "b"], input_param={"shape": [{"dim": [2, 3]}, {"dim": [6, 2, 8]}]})
    shared = make("Input", [], ["c", "d"], "I2", input_param={"shape": [{"dim": [1, 3, 5, 5]}]})
    run({}, per_top, shared)
    assert per_top.top_shapes == [(2, 3), (6, 2, 8)]
    assert shared.top_shapes == [(1, 3, 5, 5), (1, 3, 5, 5)]


def test_net_inputs_win_over_the_input_layer() -> None:
    # lets a caller change the batch size by editing net.inputs only
    layer = make("Input", [], ["data"], input_param={"shape": [{"dim": [1, 3, 8, 8]}]})
    relu = make("ReLU", ["data"], ["r"], "relu")
    run({"data": (4, 3, 8, 8)}, layer, relu)
    assert layer.top_shapes == [(4, 3, 8, 8)]
    assert relu.top_shapes == [(4, 3, 8, 8)]


def test_input_with_wrong_number_of_shapes() -> None:
    two = {"shape": [{"dim": [1]}, {"dim": [2]}]}
    expect_error("2 shapes for 3 tops", "Input", n_tops=3, input_param=two)


def test_dummy_and_memory_data() -> None:
    assert tops_of("DummyData", [], 2, dummy_data_param={"shape": [{"dim": [2, 5]}]}) == [(2, 5), (2, 5)]
    legacy = {"num": [2], "channels": [3, 1], "height": [4], "width": [4]}
    assert tops_of("DummyData", [], 2, dummy_data_param=legacy) == [(2, 3, 4, 4), (2, 1, 4, 4)]
    memory = {"batch_size": 4, "channels": 3, "height": 8, "width": 6}
    assert tops_of("MemoryData", [], 2, memory_data_param=memory) == [(4, 3, 8, 6), (4,)]


def test_data_layers_and_detection_output_are_unknown() -> None:
    for t in ("Data", "ImageData", "HDF5Data", "AnnotatedData", "WindowData"):
        assert tops_of(t, [], 2, data_param={"batch_size": 8}) == [None, None]
    assert tops_of("DetectionOutput", [(1, 100), (1, 50), (1, 2, 100)]) == [None]


# ----------------------------------------------------------------------------- convolution


def test_convolution_basic_stride_pad() -> None:
    # (32 + 2*1 - 3)//1 + 1 = 32
    got = top_of("Convolution", (2, 3, 32, 32), **conv(num_output=16, kernel_size=[3], pad=[1]))
    assert got == (2, 16, 32, 32)
    # (32 + 2*1 - 3)//2 + 1 = 31//2 + 1 = 16
    got = top_of("Convolution", (2, 3, 32, 32), **conv(num_output=8, kernel_size=[3], pad=[1], stride=[2]))
    assert got == (2, 8, 16, 16)
    # floor division drops the remainder: (7 - 2)//2 + 1 = 3
    got = top_of("Convolution", (1, 1, 7, 7), **conv(num_output=1, kernel_size=[2], stride=[2]))
    assert got == (1, 1, 3, 3)


def test_convolution_dilation() -> None:
    # extent d(k-1)+1 = 2*2+1 = 5: (10 - 5)//1 + 1 = 6
    got = top_of("Convolution", (1, 2, 10, 10), **conv(num_output=4, kernel_size=[3], dilation=[2]))
    assert got == (1, 4, 6, 6)


def test_convolution_per_axis_lists() -> None:
    # H: (10 + 0 - 3)//1 + 1 = 8;  W: (20 + 2*2 - 5)//2 + 1 = 19//2 + 1 = 10
    params = conv(num_output=2, kernel_size=[3, 5], stride=[1, 2], pad=[0, 2])
    assert top_of("Convolution", (1, 1, 10, 20), **params) == (1, 2, 8, 10)


def test_convolution_h_w_fields_override() -> None:
    # H: (9 - 1)//1 + 1 = 9;  W: (9 + 2*3 - 7)//1 + 1 = 9; group 2 divides 4 and 8
    params = conv(num_output=8, group=2, kernel_h=1, kernel_w=7, pad_h=0, pad_w=3)
    assert top_of("Convolution", (1, 4, 9, 9), **params) == (1, 8, 9, 9)
    # stride_h/stride_w: H (12 - 3)//3 + 1 = 4;  W (12 - 3)//1 + 1 = 10
    params = conv(num_output=1, kernel_size=[3], stride_h=3, stride_w=1)
    assert top_of("Convolution", (1, 1, 12, 12), **params) == (1, 1, 4, 10)


def test_convolution_3d_and_axis() -> None:
    # D: (8 + 2 - 3)//1 + 1 = 8;  H, W: (16 + 2 - 3)//2 + 1 = 15//2 + 1 = 8
    params = conv(num_output=6, kernel_size=[3], pad=[1], stride=[1, 2, 2])
    assert top_of("Convolution", (1, 2, 8, 16, 16), **params) == (1, 6, 8, 8, 8)
    # axis 2: leading (2, 5) kept, channels 3 -> 7, one spatial axis (10 - 3)//1 + 1 = 8
    assert top_of("Convolution", (2, 5, 3, 10), **conv(num_output=7, kernel_size=[3], axis=2)) == (2, 5, 7, 8)


def test_convolution_several_bottoms_share_one_shape() -> None:
    params = conv(num_output=4, kernel_size=[1])
    assert tops_of("Convolution", [(1, 2, 5, 5), (1, 2, 5, 5)], 2, **params) == [(1, 4, 5, 5)] * 2
    expect_error("same shape", "Convolution", (1, 2, 5, 5), (1, 2, 6, 6), n_tops=2, **params)


def test_deconvolution() -> None:
    # s(in-1) + d(k-1)+1 - 2p = 2*15 + 4 - 2 = 32
    params = conv(num_output=4, kernel_size=[4], stride=[2], pad=[1])
    assert top_of("Deconvolution", (2, 8, 16, 16), **params) == (2, 4, 32, 32)
    # dilation: 1*(5-1) + 2*(3-1)+1 - 0 = 9
    assert top_of("Deconvolution", (1, 1, 5, 5), **conv(num_output=1, kernel_size=[3], dilation=[2])) == (
        1, 1, 9, 9)


def test_convolution_errors() -> None:
    # 4 + 2*1 = 6 < kernel 7
    expect_error("larger than the padded input", "Convolution", (1, 1, 4, 4), **conv(
        num_output=1, kernel_size=[7], pad=[1]))
    expect_error("group 2", "Convolution", (1, 3, 8, 8), **conv(num_output=4, kernel_size=[3], group=2))
    expect_error("no num_output", "Convolution", (1, 3, 8, 8), **conv(kernel_size=[3]))
    expect_error("no kernel_size", "Convolution", (1, 3, 8, 8), **conv(num_output=3))
    expect_error("kernel_size given 3 times", "Convolution", (1, 3, 8, 8), **conv(
        num_output=3, kernel_size=[1, 2, 3]))
    params = conv(num_output=3, kernel_h=3, kernel_w=3)
    expect_error("2 spatial axes", "Convolution", (1, 3, 8, 8, 8), **params)


# ----------------------------------------------------------------------------- pooling


def test_pooling_ceil_and_floor() -> None:
    # ceil((24 - 2)/2) + 1 = 12 (LeNet)
    assert top_of("Pooling", (2, 20, 24, 24), **pool(kernel_size=2, stride=2)) == (2, 20, 12, 12)
    # ceil((6 - 3)/2) + 1 = ceil(1.5) + 1 = 3, where floor gives 1 + 1 = 2
    assert top_of("Pooling", (1, 1, 6, 6), **pool(kernel_size=3, stride=2)) == (1, 1, 3, 3)
    floor = pool(kernel_size=3, stride=2, round_mode="FLOOR")
    assert top_of("Pooling", (1, 1, 6, 6), **floor) == (1, 1, 2, 2)
    # a fork's ceil_mode: false means floor too
    assert top_of("Pooling", (1, 1, 6, 6), **pool(kernel_size=3, stride=2, ceil_mode=False)) == (1, 1, 2, 2)
    # GoogLeNet pool1: ceil((112 - 3)/2) + 1 = 55 + 1 = 56
    assert top_of("Pooling", (1, 64, 112, 112), **pool(kernel_size=3, stride=2)) == (1, 64, 56, 56)


def test_pooling_padding_drops_window_starting_in_padding() -> None:
    # ceil((5 + 2 - 2)/2) + 1 = 4, but the last window starts at (4-1)*2 = 6 >= 5 + 1: so 3
    assert top_of("Pooling", (1, 1, 5, 5), **pool(kernel_size=2, stride=2, pad=1)) == (1, 1, 3, 3)
    # ceil((5 + 2 - 3)/2) + 1 = 3, last start (3-1)*2 = 4 < 5 + 1: kept
    assert top_of("Pooling", (1, 1, 5, 5), **pool(kernel_size=3, stride=2, pad=1)) == (1, 1, 3, 3)


def test_pooling_drop_is_keyed_on_any_pad() -> None:
    # Caffe tests `pad_h || pad_w`, so H is clipped although pad_h = 0:
    # H: ceil((5 - 1)/3) + 1 = 3; (3-1)*3 = 6 >= 5 + 0 -> 2
    # W: ceil((5 + 2 - 3)/3) + 1 = 3; (3-1)*3 = 6 >= 5 + 1 -> 2
    params = pool(kernel_h=1, kernel_w=3, pad_h=0, pad_w=1, stride=3)
    assert top_of("Pooling", (1, 1, 5, 5), **params) == (1, 1, 2, 2)


def test_pooling_h_w_fields_and_mask_top() -> None:
    # H: ceil((10 - 2)/2) + 1 = 5;  W: ceil((20 - 4)/2) + 1 = 9; the mask top has the same shape
    params = pool(kernel_h=2, kernel_w=4, stride=2)
    assert tops_of("Pooling", [(1, 1, 10, 20)], 2, **params) == [(1, 1, 5, 9)] * 2
    # stride_h/stride_w: H ceil((9 - 3)/3) + 1 = 3;  W ceil((9 - 3)/1) + 1 = 7
    assert top_of("Pooling", (1, 1, 9, 9), **pool(kernel_size=3, stride_h=3, stride_w=1)) == (1, 1, 3, 7)


def test_global_pooling() -> None:
    assert top_of("Pooling", (2, 32, 7, 5), **pool(pool="AVE", global_pooling=True)) == (2, 32, 1, 1)


def test_pooling_errors() -> None:
    expect_error("larger than the padded input", "Pooling", (1, 1, 2, 2), **pool(kernel_size=3))
    expect_error("pad 2 must be smaller", "Pooling", (1, 1, 8, 8), **pool(kernel_size=2, pad=2))
    expect_error("4-D", "Pooling", (1, 1, 8), **pool(kernel_size=2))
    expect_error("no kernel_size", "Pooling", (1, 1, 8, 8), **pool())


# ----------------------------------------------------------------------------- dense, recurrent


def test_inner_product() -> None:
    ip = {"inner_product_param": {"num_output": 500, "axis": 1}}
    assert top_of("InnerProduct", (2, 50, 4, 4), **ip) == (2, 500)
    assert top_of("InnerProduct", (6, 2, 16), inner_product_param={"num_output": 5, "axis": 2}) == (6, 2, 5)
    assert top_of("InnerProduct", (6, 2, 16), inner_product_param={"num_output": 5, "axis": -1}) == (6, 2, 5)
    expect_error("out of range", "InnerProduct", (2, 3), inner_product_param={"num_output": 5, "axis": 2})


def test_embed() -> None:
    assert top_of("Embed", (6, 2), embed_param={"num_output": 8, "input_dim": 20}) == (6, 2, 8)


def test_lstm_and_rnn() -> None:
    rp = {"recurrent_param": {"num_output": 16}}
    assert top_of("LSTM", (6, 2, 8), (6, 2), **rp) == (6, 2, 16)
    assert top_of("RNN", (6, 2, 3, 4), (6, 2), **rp) == (6, 2, 16)
    # expose_hidden: h_T and c_T are (1, N, num_output)
    assert tops_of("LSTM", [(6, 2, 8), (6, 2), (1, 2, 16), (1, 2, 16)], 3, **rp) == [
        (6, 2, 16), (1, 2, 16), (1, 2, 16)]
    expect_error("cont must be", "LSTM", (6, 2, 8), (5, 2), **rp)
    expect_error("needs bottoms x and cont", "LSTM", (6, 2, 8), **rp)


# ----------------------------------------------------------------------------- reshaping


def test_flatten() -> None:
    fp = {"axis": 1, "end_axis": -1}
    assert top_of("Flatten", (2, 3, 4, 5), flatten_param=fp) == (2, 60)
    assert top_of("Flatten", (2, 3, 4, 5), flatten_param={"axis": 1, "end_axis": 2}) == (2, 12, 5)
    assert top_of("Flatten", (2, 3, 4, 5), flatten_param={"axis": 2, "end_axis": -1}) == (2, 3, 20)
    expect_error("comes before", "Flatten", (2, 3, 4), flatten_param={"axis": 2, "end_axis": 1})


def reshape(dims: list[int], axis: int = 0, num_axes: int = -1) -> dict[str, Any]:
    return {"reshape_param": {"shape": {"dim": dims}, "axis": axis, "num_axes": num_axes}}


def test_reshape_copy_and_infer() -> None:
    # 0 copies 2; -1 = 120 / 2 = 60
    assert top_of("Reshape", (2, 3, 4, 5), **reshape([0, -1])) == (2, 60)
    # 0 copies 2, then 3, 2 given; -1 = 120 / (2*3*2) = 10
    assert top_of("Reshape", (2, 3, 4, 5), **reshape([0, 3, 2, -1])) == (2, 3, 2, 10)
    # -1 first: 120 / (4*5) = 6
    assert top_of("Reshape", (2, 3, 4, 5), **reshape([-1, 4, 5])) == (6, 4, 5)


def test_reshape_axis_and_num_axes() -> None:
    # replace axes [1, 3) = (3, 4) by -1 = 12
    assert top_of("Reshape", (2, 3, 4, 5), **reshape([-1], axis=1, num_axes=2)) == (2, 12, 5)
    # axis -1 starts after the last axis; num_axes 0 inserts a trailing 1
    assert top_of("Reshape", (2, 3, 4, 5), **reshape([1], axis=-1, num_axes=0)) == (2, 3, 4, 5, 1)
    # 0 copies relative to axis: dims[0] = 0 copies axis 1 (3)
    assert top_of("Reshape", (2, 3, 4, 5), **reshape([0, 2, 2], axis=1, num_axes=2)) == (2, 3, 2, 2, 5)


def test_reshape_errors() -> None:
    # explicit product 2 (copied) * 4 = 8 does not divide 30
    expect_error("not divisible", "Reshape", (2, 3, 5), **reshape([0, -1, 4]))
    expect_error("has 7 elements", "Reshape", (2, 3, 5), **reshape([7]))
    expect_error("only one -1", "Reshape", (2, 3, 5), **reshape([-1, -1]))
    expect_error("no axis 2 to copy", "Reshape", (2, 3), **reshape([0, 0, 0]))


def test_permute() -> None:
    # SSD mbox: (N, C, H, W) -> (N, H, W, C)
    assert top_of("Permute", (1, 12, 19, 19), permute_param={"order": [0, 2, 3, 1]}) == (1, 19, 19, 12)
    # order [0, 2] is completed with the unlisted axes 1, 3 in order
    assert top_of("Permute", (1, 12, 19, 7), permute_param={"order": [0, 2]}) == (1, 19, 12, 7)
    assert top_of("Permute", (1, 12, 19, 7), permute_param={"order": []}) == (1, 12, 19, 7)
    expect_error("distinct axes", "Permute", (1, 2, 3), permute_param={"order": [0, 0]})
    expect_error("distinct axes", "Permute", (1, 2, 3), permute_param={"order": [3]})


def test_crop() -> None:
    # FCN: from axis 2 on take the reference's 32x32; 44 - 5 = 39 >= 32 fits
    got = top_of("Crop", (1, 21, 44, 44), (1, 3, 32, 32), crop_param={"axis": 2, "offset": [5]})
    assert got == (1, 21, 32, 32)
    # one offset per axis from axis 1; negative axis counts from the end (-3 -> 1)
    got = top_of("Crop", (1, 21, 34, 34), (1, 10, 30, 30), crop_param={"axis": -3, "offset": [0, 2, 4]})
    assert got == (1, 10, 30, 30)
    # no offset: 0
    assert top_of("Crop", (2, 3, 5, 5), (9, 9, 4, 4), crop_param={"axis": 2, "offset": []}) == (2, 3, 4, 4)
    # 44 - 13 = 31 < 32
    too_far = {"axis": 2, "offset": [13]}
    expect_error("exceeds axis 2", "Crop", (1, 21, 44, 44), (1, 3, 32, 32), crop_param=too_far)
    expect_error("2 offsets", "Crop", (1, 2, 8, 8), (1, 2, 4, 4), crop_param={"axis": 1, "offset": [1, 1]})


def test_tile() -> None:
    assert top_of("Tile", (2, 3, 4), tile_param={"axis": 1, "tiles": 3}) == (2, 9, 4)
    assert top_of("Tile", (2, 3, 4), tile_param={"axis": -1, "tiles": 2}) == (2, 3, 8)


# ----------------------------------------------------------------------------- joining, splitting


def test_concat() -> None:
    assert top_of("Concat", (2, 3, 8, 8), (2, 5, 8, 8), concat_param={"axis": 1}) == (2, 8, 8, 8)
    assert top_of("Concat", (2, 3, 8, 4), (2, 3, 8, 5), concat_param={"axis": -1}) == (2, 3, 8, 9)
    # legacy concat_dim wins over the (defaulted) axis
    assert top_of("Concat", (2, 3), (4, 3), concat_param={"axis": 1, "concat_dim": 0}) == (6, 3)
    assert top_of("Concat", (2, 3, 8, 8), concat_param={"axis": 1}) == (2, 3, 8, 8)
    expect_error("match except along axis 1", "Concat", (2, 3, 8, 8), (2, 5, 7, 8), concat_param={"axis": 1})
    expect_error("match except along axis 1", "Concat", (2, 3, 8, 8), (2, 5, 8), concat_param={"axis": 1})


def test_eltwise() -> None:
    got = top_of("Eltwise", (2, 16, 8, 8), (2, 16, 8, 8), eltwise_param={"operation": "SUM"})
    assert got == (2, 16, 8, 8)
    expect_error("same shape", "Eltwise", (2, 16, 8, 8), (2, 16, 4, 4))


def test_slice() -> None:
    # points 3, 7 on 10: sizes 3, 4, 3
    got = tops_of("Slice", [(2, 10, 4)], 3, slice_param={"axis": 1, "slice_point": [3, 7]})
    assert got == [(2, 3, 4), (2, 4, 4), (2, 3, 4)]
    # no points: 10 / 2 = 5 each
    assert tops_of("Slice", [(2, 10, 4)], 2, slice_param={"axis": 1, "slice_point": []}) == [(2, 5, 4)] * 2
    # legacy slice_dim 2 wins over axis: 4 / 2 = 2
    got = tops_of("Slice", [(2, 10, 4)], 2, slice_param={"axis": 1, "slice_dim": 2, "slice_point": []})
    assert got == [(2, 10, 2)] * 2
    assert tops_of("Slice", [(2, 10, 4)], 2, slice_param={"axis": -1, "slice_point": [1]}) == [
        (2, 10, 1), (2, 10, 3)]
    expect_error("do not evenly divide", "Slice", (2, 10, 4), n_tops=3, slice_param={"axis": 1})
    expect_error("2 slice points for 2 tops", "Slice", (2, 10), n_tops=2, slice_param={"slice_point": [2, 4]})
    expect_error("increase strictly", "Slice", (2, 10), n_tops=3, slice_param={"slice_point": [4, 4]})
    expect_error("increase strictly", "Slice", (2, 10), n_tops=2, slice_param={"slice_point": [10]})


def test_split() -> None:
    assert tops_of("Split", [(2, 3, 4)], 3) == [(2, 3, 4)] * 3


@pytest.mark.parametrize(
    "type_",
    ["ReLU", "PReLU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL", "ELU", "Threshold",
     "Swish", "Clip", "Dropout", "BatchNorm", "Scale", "Bias", "LRN", "MVN", "Softmax", "Normalize"],
)  # fmt: skip
def test_elementwise_keeps_shape(type_: str) -> None:
    assert top_of(type_, (2, 3, 5, 7)) == (2, 3, 5, 7)


def test_scale_with_second_bottom_keeps_first_shape() -> None:
    assert top_of("Scale", (2, 3, 5, 7), (3,), scale_param={"axis": 1}) == (2, 3, 5, 7)


# ----------------------------------------------------------------------------- heads


def test_argmax() -> None:
    # no axis: (N, 1, top_k) padded to 3 axes
    assert top_of("ArgMax", (2, 10), argmax_param={"top_k": 1}) == (2, 1, 1)
    # out_max_val adds the values: (N, 2, top_k, 1) for a 4-D input
    assert top_of("ArgMax", (2, 10, 1, 1), argmax_param={"top_k": 3, "out_max_val": True}) == (2, 2, 3, 1)
    # with axis: that axis becomes top_k
    assert top_of("ArgMax", (2, 10, 5), argmax_param={"top_k": 3, "axis": 1}) == (2, 3, 5)
    expect_error("top_k 11", "ArgMax", (2, 10), argmax_param={"top_k": 11})


def test_reduction() -> None:
    assert top_of("Reduction", (2, 3, 4), reduction_param={"axis": 1}) == (2,)
    assert top_of("Reduction", (2, 3, 4), reduction_param={}) == ()
    assert top_of("Reduction", (2, 3, 4), reduction_param={"axis": -1}) == (2, 3)


def test_losses_accuracy_silence() -> None:
    assert top_of("SoftmaxWithLoss", (2, 10), (2,)) == ()
    assert tops_of("SoftmaxWithLoss", [(2, 10), (2,)], 2) == [(), (2, 10)]
    assert top_of("EuclideanLoss", (2, 10), (2, 10)) == ()
    assert tops_of("Accuracy", [(2, 10), (2,)], 2, accuracy_param={"axis": 1}) == [(), (10,)]
    silence = make("Silence", ["x"], [], "s")
    after = make("ReLU", ["x"], ["y"], "after")
    run({"x": (1, 2)}, silence, after)
    assert silence.top_shapes == []
    assert after.top_shapes == [(1, 2)]


def test_prior_box() -> None:
    # conv4_3 of SSD300: ratios 1, 2, 1/2 (flip) x one min_size = 3 priors; 38*38*3*4 = 17328
    pb = {"min_size": [30.0], "aspect_ratio": [2.0], "flip": True, "clip": False}
    assert top_of("PriorBox", (1, 512, 38, 38), (1, 3, 300, 300), prior_box_param=pb) == (1, 2, 17328)
    # fc7: ratios 1, 2, 1/2, 3, 1/3 = 5, plus 1 for max_size = 6; 19*19*6*4 = 8664
    pb = {"min_size": [60.0], "max_size": [111.0], "aspect_ratio": [2.0, 3.0], "flip": True}
    assert top_of("PriorBox", (1, 1024, 19, 19), (1, 3, 300, 300), prior_box_param=pb) == (1, 2, 8664)
    # no flip: ratios 1, 2, 3 = 3, plus 1 = 4; 3*5*4*4 = 240
    pb = {"min_size": [60.0], "max_size": [111.0], "aspect_ratio": [2.0, 3.0], "flip": False}
    assert top_of("PriorBox", (1, 8, 3, 5), (1, 3, 300, 300), prior_box_param=pb) == (1, 2, 240)
    # 0.5 is already there as the flip of 2: ratios 1, 2, 1/2 = 3; two min_sizes = 6; 2*2*6*4 = 96
    pb = {"min_size": [30.0, 40.0], "aspect_ratio": [2.0, 0.5], "flip": True}
    assert top_of("PriorBox", (1, 8, 2, 2), (1, 3, 300, 300), prior_box_param=pb) == (1, 2, 96)
    expect_error("no min_size", "PriorBox", (1, 8, 2, 2), (1, 3, 30, 30), prior_box_param={"min_size": []})
    expect_error("must pair with and exceed", "PriorBox", (1, 8, 2, 2), (1, 3, 30, 30), prior_box_param={
        "min_size": [30.0], "max_size": [20.0]})


# ----------------------------------------------------------------------------- Caffe's own outputs

REFERENCE = Path("/work/shared/caffe-models/caffe-reference")
MODELS = ["a_lenet", "b_resnet_block", "c_deconv_prelu", "d_grouped", "e_recurrent"]


def _split_source(net: Net, split_layer: str) -> Shape | None:
    """The shape behind a ``Split`` Caffe inserted itself (absent from the prototxt).

    Caffe's ``InsertSplits`` names it ``<blob>_<producer layer>_<top index>_split``
    and its tops copy that producer's top, so that is what the split must match.
    """
    for layer in net.layers:
        for index, top in enumerate(layer.tops):
            if split_layer == f"{top}_{layer.name}_{index}_split":
                return layer.top_shapes[index]
    pytest.fail(f"{split_layer!r} is neither a layer of the net nor a split Caffe inserted after one")


@pytest.mark.parametrize("model", MODELS)
def test_inferred_shapes_match_caffe_outputs(model: str) -> None:
    if not REFERENCE.is_dir():
        pytest.fail(f"reference models missing: {REFERENCE} does not exist (it is needed, not optional)")
    folder = REFERENCE / model
    net = caffeport.read(folder / f"{model}.caffemodel", folder / "deploy.prototxt")
    if (folder / "inputs.npz").exists():
        with np.load(folder / "inputs.npz") as inputs:
            net.inputs.update({name: tuple(inputs[name].shape) for name in inputs.files})
    infer_shapes(net, strict=True)
    with np.load(folder / "outputs_per_layer.npz") as outputs:
        assert outputs.files, f"{model}: no outputs recorded"
        for key in outputs.files:
            layer_name, top = key.split("__")
            if layer_name in net:
                layer = net.layer(layer_name)
                assert top in layer.tops, f"{model}: {key}: {top!r} is not a top of {layer_name!r}"
                inferred = layer.top_shapes[layer.tops.index(top)]
            else:
                assert top.startswith(f"{layer_name}_"), key
                inferred = _split_source(net, layer_name)
            caffe_shape = outputs[key].shape
            assert inferred == caffe_shape, f"{model}: {key}: inferred {inferred}, Caffe {caffe_shape}"
