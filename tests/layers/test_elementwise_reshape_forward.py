"""Forwards of the element-wise, joining/splitting and reshaping layers, against hand-worked values.

Every expected value is written out by hand (with the arithmetic in a comment)
or comes from a deliberately naive loop over output positions, never from the
code under test. Caffe's rules that the values follow are cited from the
``*_layer.cpp`` each layer module names.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, ShapeInferenceError, UnsupportedModelError
from caffeport.forward import unsupported_layers
from caffeport.ir import Layer, Net, Shape
from caffeport.layers import layer_type
from caffeport.layers.shapes import infer_shapes


def make(type_: str, bottoms: list[str], tops: list[str], name: str = "L", **params: Any) -> Layer:
    return Layer(name=name, type=type_, bottoms=bottoms, tops=tops, params=params)


def f32(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def forward(type_: str, *bottoms: np.ndarray, n_tops: int = 1, **params: Any) -> list[np.ndarray]:
    """Run one layer's forward directly on copies of the bottoms, checking that it left them untouched."""
    layer = make(type_, [f"b{i}" for i in range(len(bottoms))], [f"t{i}" for i in range(n_tops)], **params)
    given = [f32(b) for b in bottoms]
    kept = [b.copy() for b in given]
    tops = layer_type(type_).forward(layer, given)
    for before, after in zip(kept, given, strict=True):
        np.testing.assert_array_equal(before, after)  # a forward never writes into its bottoms
    assert len(tops) == n_tops
    for top in tops:
        assert isinstance(top, np.ndarray) and top.dtype == np.float32
    return tops


def one(type_: str, *bottoms: np.ndarray, **params: Any) -> np.ndarray:
    return forward(type_, *bottoms, **params)[0]


def run_net(inputs: dict[str, np.ndarray], *layers: Layer) -> dict[str, np.ndarray]:
    net = Net(name="t", layers=list(layers), inputs={k: tuple(v.shape) for k, v in inputs.items()})
    return caffeport.run(net, inputs)


def shapes_strict(inputs: dict[str, Shape], *layers: Layer) -> Net:
    return infer_shapes(Net(name="t", layers=list(layers), inputs=dict(inputs)), strict=True)


# ----------------------------------------------------------------------------- Eltwise


def test_eltwise_sum_with_coeff_one_minus_one_is_the_difference() -> None:
    c1 = f32([[1.0, 2.0], [3.0, -4.0]])
    c2 = f32([[0.5, 5.0], [3.0, -1.0]])
    got = one("Eltwise", c1, c2, eltwise_param={"operation": "SUM", "coeff": [1.0, -1.0]})
    # 1-0.5, 2-5, 3-3, -4-(-1)
    np.testing.assert_array_equal(got, f32([[0.5, -3.0], [0.0, -3.0]]))


def test_eltwise_sum_without_coeff_and_with_three_coefficients() -> None:
    a, b, c = f32([1.0, 2.0]), f32([10.0, 20.0]), f32([100.0, 200.0])
    np.testing.assert_array_equal(one("Eltwise", a, b, c, eltwise_param={}), f32([111.0, 222.0]))
    got = one("Eltwise", a, b, c, eltwise_param={"operation": "SUM", "coeff": [2.0, 0.5, -0.25]})
    # 2*1 + 0.5*10 - 0.25*100 = -18 ; 2*2 + 0.5*20 - 0.25*200 = -36
    np.testing.assert_array_equal(got, f32([-18.0, -36.0]))
    # the enum number (1 = SUM) works as the name does
    np.testing.assert_array_equal(one("Eltwise", a, b, eltwise_param={"operation": 1}), f32([11.0, 22.0]))


def test_eltwise_prod_multiplies_every_bottom() -> None:
    a, b, c = f32([1.0, -2.0, 3.0]), f32([4.0, 5.0, 0.0]), f32([-1.0, 0.5, 7.0])
    # 1*4*-1, -2*5*0.5, 3*0*7
    np.testing.assert_array_equal(one("Eltwise", a, b, c, eltwise_param={"operation": "PROD"}), f32([-4.0, -5.0, 0.0]))
    np.testing.assert_array_equal(one("Eltwise", a, b, eltwise_param={"operation": 0}), f32([4.0, -10.0, 0.0]))


def test_eltwise_max_takes_the_largest_and_follows_caffes_comparisons_for_nan() -> None:
    a = f32([1.0, 5.0, -3.0, 2.0, np.nan, 1.0])
    b = f32([4.0, 2.0, -3.0, 9.0, 1.0, np.nan])
    c = f32([0.0, 7.0, -1.0, 3.0, 0.0, 0.0])
    got = one("Eltwise", a, b, c, eltwise_param={"operation": "MAX"})
    # per position: max(1,4,0)=4, max(5,2,7)=7, max(-3,-3,-1)=-1, max(2,9,3)=9.
    # NaN: Caffe keeps b unless a > b (NaN > 1 is false -> 1), then takes c only where c > running max
    # (0 > 1 false -> 1); a=1, b=NaN: 1 > NaN false -> NaN, and 0 > NaN is false -> NaN stays.
    np.testing.assert_array_equal(got[:5], f32([4.0, 7.0, -1.0, 9.0, 1.0]))
    assert np.isnan(got[5])
    # coeff is ignored by MAX (Caffe only checks its count)
    got = one("Eltwise", a[:4], b[:4], eltwise_param={"operation": "MAX", "coeff": [5.0, 5.0]})
    np.testing.assert_array_equal(got, f32([4.0, 5.0, -3.0, 9.0]))


@pytest.mark.parametrize(
    ("n_bottoms", "params", "match"),
    [
        (2, {"operation": "SUM", "coeff": [1.0, 2.0, 3.0]}, "3 coeff values for 2 bottoms"),
        (3, {"operation": "SUM", "coeff": [1.0]}, "1 coeff values for 3 bottoms"),
        (2, {"operation": "PROD", "coeff": [1.0, 1.0]}, "only for SUM"),
        (1, {"operation": "SUM"}, "at least 2 bottoms"),
        (2, {"operation": "MIN"}, "unknown eltwise_param.operation"),
    ],
)
def test_eltwise_refuses_what_caffe_checks_in_layer_setup(n_bottoms: int, params: dict[str, Any], match: str) -> None:
    names = [f"b{i}" for i in range(n_bottoms)]
    layer = make("Eltwise", names, ["t"], eltwise_param=params)
    with pytest.raises(ShapeInferenceError, match=match):
        shapes_strict(dict.fromkeys(names, (2, 3)), layer)
    # and the forward refuses it too, with the same clear error (run reaches it even after a non-strict read)
    with pytest.raises(CaffeportError, match=match):
        run_net({name: np.ones((2, 3), np.float32) for name in names}, layer)


def test_eltwise_key_params_show_the_coefficients() -> None:
    kind = layer_type("Eltwise")
    assert kind.key_params(make("Eltwise", [], [], eltwise_param={"operation": "SUM", "coeff": [1.0, -1.0]})) == \
        "SUM coeff=[1, -1]"
    assert kind.key_params(make("Eltwise", [], [], eltwise_param={"operation": "PROD"})) == "PROD"
    assert kind.key_params(make("Eltwise", [], [], eltwise_param={"operation": 2})) == "MAX"


# ----------------------------------------------------------------------------- Crop


def naive_crop(x: np.ndarray, top: Shape, offsets: list[int]) -> np.ndarray:
    out = np.zeros(top, np.float32)
    for index in np.ndindex(*top):
        out[index] = x[tuple(i + o for i, o in zip(index, offsets, strict=True))]
    return out


def test_crop_with_one_offset_for_every_cropped_axis() -> None:
    x = np.arange(2 * 3 * 6 * 7, dtype=np.float32).reshape(2, 3, 6, 7)
    ref = np.zeros((1, 1, 3, 4), np.float32)  # only its shape matters
    got = one("Crop", x, ref, crop_param={"axis": 2, "offset": [2]})
    assert got.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(got, naive_crop(x, (2, 3, 3, 4), [0, 0, 2, 2]))
    # first value: x[0, 0, 2, 2] = 2*7 + 2 = 16
    assert got[0, 0, 0, 0] == 16.0


def test_crop_with_per_axis_offsets_and_from_axis_1() -> None:
    x = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7)
    ref = np.zeros((2, 2, 3, 4), np.float32)
    got = one("Crop", x, ref, crop_param={"axis": 1, "offset": [3, 1, 2]})
    np.testing.assert_array_equal(got, naive_crop(x, (2, 2, 3, 4), [0, 3, 1, 2]))
    # x[0, 3, 1, 2] = 3*42 + 1*7 + 2 = 135
    assert got[0, 0, 0, 0] == 135.0
    # no offset: the window starts at 0; negative axis -1 crops the last axis only
    got = one("Crop", x, np.zeros((1, 1, 1, 4), np.float32), crop_param={"axis": -1})
    np.testing.assert_array_equal(got, x[..., :4])


def test_crop_refuses_a_window_past_the_end_and_a_wrong_offset_count() -> None:
    x, ref = np.zeros((1, 1, 5, 5), np.float32), np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(ShapeInferenceError, match="exceeds axis"):
        one("Crop", x, ref, crop_param={"axis": 2, "offset": [3]})
    with pytest.raises(ShapeInferenceError, match="3 offsets"):
        one("Crop", x, ref, crop_param={"axis": 2, "offset": [0, 1, 1]})


def test_crop_key_params() -> None:
    kind = layer_type("Crop")
    assert kind.key_params(make("Crop", [], [], crop_param={"axis": 2, "offset": [4]})) == "axis=2 offset=4"
    assert kind.key_params(make("Crop", [], [], crop_param={"axis": 1, "offset": [0, 1, 2]})) == \
        "axis=1 offset=[0, 1, 2]"
    assert kind.key_params(make("Crop", [], [], crop_param={"axis": 2, "offset": []})) == "axis=2 offset=0"


# ----------------------------------------------------------------------------- Slice and Split


def test_slice_at_points_along_axis_1() -> None:
    x = np.arange(2 * 6 * 2, dtype=np.float32).reshape(2, 6, 2)
    a, b, c = forward("Slice", x, n_tops=3, slice_param={"axis": 1, "slice_point": [1, 4]})
    assert (a.shape, b.shape, c.shape) == ((2, 1, 2), (2, 3, 2), (2, 2, 2))
    # channel ranges [0,1), [1,4), [4,6); sample 1 starts at 12
    np.testing.assert_array_equal(a[1, 0], f32([12.0, 13.0]))
    np.testing.assert_array_equal(b[0], f32([[2, 3], [4, 5], [6, 7]]))
    np.testing.assert_array_equal(c[1], f32([[20, 21], [22, 23]]))


def test_slice_evenly_and_with_the_legacy_slice_dim() -> None:
    x = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    a, b = forward("Slice", x, n_tops=2, slice_param={"slice_dim": 0})
    np.testing.assert_array_equal(a, f32([[0, 1, 2], [3, 4, 5]]))
    np.testing.assert_array_equal(b, f32([[6, 7, 8], [9, 10, 11]]))
    parts = forward("Slice", x, n_tops=3, slice_param={"axis": -1})
    for i, part in enumerate(parts):
        np.testing.assert_array_equal(part, x[:, i : i + 1])
    with pytest.raises(ShapeInferenceError, match="evenly divide"):
        forward("Slice", x, n_tops=2, slice_param={"axis": 1})


def test_slice_key_params() -> None:
    kind = layer_type("Slice")
    assert kind.key_params(make("Slice", [], [], slice_param={"axis": 1, "slice_point": [1, 4]})) == \
        "axis=1 points=[1, 4]"
    assert kind.key_params(make("Slice", [], [], slice_param={"axis": 1})) == "axis=1 even"
    assert kind.key_params(make("Slice", [], [], slice_param={"slice_dim": 2})) == "slice_dim=2 even"


def test_split_gives_independent_copies() -> None:
    x = f32([[1.0, 2.0]])
    tops = forward("Split", x, n_tops=3)
    for top in tops:
        np.testing.assert_array_equal(top, x)
    tops[0][0, 0] = 99.0
    assert tops[1][0, 0] == 1.0


# ----------------------------------------------------------------------------- Concat


def test_concat_along_channels_a_negative_axis_and_the_legacy_concat_dim() -> None:
    a = np.arange(2 * 1 * 2, dtype=np.float32).reshape(2, 1, 2)
    b = 100 + np.arange(2 * 2 * 2, dtype=np.float32).reshape(2, 2, 2)
    got = one("Concat", a, b, concat_param={"axis": 1})
    assert got.shape == (2, 3, 2)
    # sample 0: a's row (0, 1), then b's rows (100, 101), (102, 103)
    np.testing.assert_array_equal(got[0], f32([[0, 1], [100, 101], [102, 103]]))
    np.testing.assert_array_equal(got[1], f32([[2, 3], [104, 105], [106, 107]]))
    c = np.full((2, 1, 3), 7.0, np.float32)
    got = one("Concat", a, c, concat_param={"axis": -1})
    np.testing.assert_array_equal(got[1, 0], f32([2, 3, 7, 7, 7]))
    got = one("Concat", a, a, concat_param={"concat_dim": 0, "axis": 1})  # concat_dim wins
    assert got.shape == (4, 1, 2)
    with pytest.raises(ShapeInferenceError, match="must match except along axis"):
        one("Concat", a, c, concat_param={"axis": 1})


def test_concat_key_params_name_the_axis_when_not_channels() -> None:
    kind = layer_type("Concat")
    assert kind.key_params(make("Concat", [], [], concat_param={"axis": 1})) == ""
    assert kind.key_params(make("Concat", [], [], concat_param={"axis": 2})) == "axis=2"
    assert kind.key_params(make("Concat", [], [], concat_param={"axis": 1, "concat_dim": 0})) == "concat_dim=0"


# ----------------------------------------------------------------------------- Reshape, Flatten, Permute, Tile


def test_reshape_with_0_and_minus_1() -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    got = one("Reshape", x, reshape_param={"shape": {"dim": [0, -1]}, "axis": 0, "num_axes": -1})
    # 0 copies the 2, -1 takes 24 / 2 = 12; C order: row 1 is 12..23
    assert got.shape == (2, 12)
    np.testing.assert_array_equal(got[1], np.arange(12, 24, dtype=np.float32))
    got = one("Reshape", x, reshape_param={"shape": {"dim": [-1, 2]}, "axis": 1, "num_axes": -1})
    assert got.shape == (2, 6, 2)  # axes from 1 on: 12 values -> (-1 = 6, 2)
    got = one("Reshape", x, reshape_param={"shape": {"dim": [1]}, "axis": -1, "num_axes": 0})
    assert got.shape == (2, 3, 4, 1)  # axis -1 is just past the end: a new trailing axis
    with pytest.raises(ShapeInferenceError, match="divisible"):
        one("Reshape", x, reshape_param={"shape": {"dim": [5, -1]}})


def test_reshape_recomputes_its_shape_for_the_batch_actually_fed() -> None:
    layer = make("Reshape", ["x"], ["y"], reshape_param={"shape": {"dim": [0, -1]}, "axis": 0, "num_axes": -1})
    net = Net(name="t", layers=[layer], inputs={"x": (1, 3, 2)})
    got = caffeport.run(net, {"x": np.arange(5 * 6, dtype=np.float32).reshape(5, 3, 2)})["y"]
    assert got.shape == (5, 6)
    assert got[4, 5] == 29.0


def test_reshape_and_flatten_key_params() -> None:
    kind = layer_type("Reshape")
    layer = make("Reshape", [], [], reshape_param={"shape": {"dim": [0, -1, 4]}, "axis": 0, "num_axes": -1})
    assert kind.key_params(layer) == "shape=[0, -1, 4]"
    layer = make("Reshape", [], [], reshape_param={"shape": {"dim": [2]}, "axis": 1, "num_axes": 2})
    assert kind.key_params(layer) == "shape=[2] axis=1 num_axes=2"
    assert layer_type("Flatten").key_params(make("Flatten", [], [], flatten_param={"axis": 1, "end_axis": -1})) == ""
    assert layer_type("Flatten").key_params(make("Flatten", [], [], flatten_param={"axis": 2, "end_axis": 3})) == \
        "axis=2 end_axis=3"


def test_flatten_merges_the_given_axes_in_c_order() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    got = one("Flatten", x, flatten_param={"axis": 1, "end_axis": -1})
    assert got.shape == (2, 60)
    np.testing.assert_array_equal(got[1], np.arange(60, 120, dtype=np.float32))
    got = one("Flatten", x, flatten_param={"axis": 1, "end_axis": 2})
    assert got.shape == (2, 12, 5)
    assert got[0, 11, 4] == 59.0  # (c=2, h=3, w=4) -> 2*20 + 3*5 + 4


def test_permute_0_2_3_1_moves_channels_last() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    got = one("Permute", x, permute_param={"order": [0, 2, 3, 1]})
    assert got.shape == (2, 4, 5, 3)
    for n, h, w, c in np.ndindex(*got.shape):
        assert got[n, h, w, c] == x[n, c, h, w]
    # top[1, 2, 3, :] = x[1, :, 2, 3] = 60 + c*20 + 2*5 + 3
    np.testing.assert_array_equal(got[1, 2, 3], f32([73, 93, 113]))
    assert got.flags.c_contiguous
    # unlisted axes follow in their own order: order [1] on 3-D is (1, 0, 2)
    y = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    np.testing.assert_array_equal(one("Permute", y, permute_param={"order": [1]}), y.reshape(2, 1, 3))
    assert layer_type("Permute").key_params(make("Permute", [], [], permute_param={"order": [0, 2, 3, 1]})) == \
        "order=[0, 2, 3, 1]"


def test_tile_repeats_whole_blocks() -> None:
    x = f32([[1.0, 2.0], [3.0, 4.0]])
    # Caffe copies the block from axis on, tiles times, per outer index: [1, 2, 1, 2, 1, 2]
    np.testing.assert_array_equal(one("Tile", x, tile_param={"axis": 1, "tiles": 3}),
                                  f32([[1, 2, 1, 2, 1, 2], [3, 4, 3, 4, 3, 4]]))
    np.testing.assert_array_equal(one("Tile", x, tile_param={"axis": 0, "tiles": 2}),
                                  f32([[1, 2], [3, 4], [1, 2], [3, 4]]))
    y = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    got = one("Tile", y, tile_param={"axis": 1, "tiles": 2})
    assert got.shape == (2, 4, 3)
    np.testing.assert_array_equal(got[1], f32([[6, 7, 8], [9, 10, 11], [6, 7, 8], [9, 10, 11]]))


# ----------------------------------------------------------------------------- Reduction


def test_reduction_operations_axis_and_coeff() -> None:
    x = f32([[1.0, -2.0, 3.0], [-4.0, 5.0, 6.0]])
    # axis 0 (the default): one value over everything, a 0-D top; sum = 9
    got = one("Reduction", x, reduction_param={})
    assert got.shape == () and got == 9.0
    got = one("Reduction", x, reduction_param={"operation": "SUM", "axis": 1})
    np.testing.assert_array_equal(got, f32([2.0, 7.0]))
    got = one("Reduction", x, reduction_param={"operation": "ASUM", "axis": 1})
    np.testing.assert_array_equal(got, f32([6.0, 15.0]))
    got = one("Reduction", x, reduction_param={"operation": "SUMSQ", "axis": 1, "coeff": 2.0})
    np.testing.assert_array_equal(got, f32([28.0, 154.0]))  # 2*(1+4+9), 2*(16+25+36)
    got = one("Reduction", x, reduction_param={"operation": "MEAN", "axis": -1, "coeff": 3.0})
    np.testing.assert_allclose(got, f32([2.0, 7.0]), rtol=1e-6)  # 3 * (2/3), 3 * (7/3)
    got = one("Reduction", x, reduction_param={"operation": 4, "axis": 0})  # enum 4 = MEAN
    np.testing.assert_allclose(got, 1.5, rtol=1e-6)
    assert layer_type("Reduction").key_params(
        make("Reduction", [], [], reduction_param={"operation": "MEAN", "axis": 1, "coeff": 2.0})) == \
        "MEAN axis=1 coeff=2"


# ----------------------------------------------------------------------------- ArgMax


def test_argmax_ties_put_the_larger_index_first() -> None:
    x = f32([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]]).reshape(2, 5, 1, 1)
    # std::greater on (value, index): among the three 3s, index 4 then 2 then 1; all zeros: 4, 3, 2
    got = one("ArgMax", x, argmax_param={"top_k": 3, "out_max_val": False})
    assert got.shape == (2, 1, 3, 1)
    np.testing.assert_array_equal(got[:, 0, :, 0], f32([[4, 2, 1], [4, 3, 2]]))
    got = one("ArgMax", x, argmax_param={"top_k": 1})
    np.testing.assert_array_equal(got.reshape(2), f32([4, 4]))


def test_argmax_out_max_val_without_axis_is_indices_then_values() -> None:
    x = f32([[[0.5, 9.0], [9.0, -1.0]], [[2.0, 2.0], [7.0, 1.0]]]).reshape(2, 1, 2, 2)
    got = one("ArgMax", x, argmax_param={"top_k": 2, "out_max_val": True})
    assert got.shape == (2, 2, 2, 1)
    # sample 0, flat [0.5, 9, 9, -1]: 9 at index 2 before 9 at index 1; sample 1 [2, 2, 7, 1]: 7 at 2, then 2 at 1
    np.testing.assert_array_equal(got[0, :, :, 0], f32([[2, 1], [9, 9]]))
    np.testing.assert_array_equal(got[1, :, :, 0], f32([[2, 1], [7, 2]]))


def test_argmax_with_an_axis_gives_indices_or_values_in_place() -> None:
    # (N=1, C=3, W=2): along C, column 0 is [1, 5, 5] and column 1 is [4, -2, 0]
    x = f32([[[1.0, 4.0], [5.0, -2.0], [5.0, 0.0]]])
    got = one("ArgMax", x, argmax_param={"axis": 1, "top_k": 2})
    assert got.shape == (1, 2, 2)
    np.testing.assert_array_equal(got[0], f32([[2, 0], [1, 2]]))  # column 0: tie -> 2 then 1; column 1: 0 then 2
    got = one("ArgMax", x, argmax_param={"axis": 1, "top_k": 2, "out_max_val": True})
    np.testing.assert_array_equal(got[0], f32([[5, 4], [5, 0]]))
    got = one("ArgMax", x, argmax_param={"axis": -1, "top_k": 1})
    np.testing.assert_array_equal(got[0, :, 0], f32([1, 0, 0]))  # rows [1,4] [5,-2] [5,0]
    with pytest.raises(ShapeInferenceError, match="top_k 4"):
        one("ArgMax", x, argmax_param={"axis": 1, "top_k": 4})


def test_argmax_of_a_2d_input_has_three_axes() -> None:
    got = one("ArgMax", f32([[3.0, 1.0, 4.0, 1.0, 5.0]]), argmax_param={"top_k": 2})
    assert got.shape == (1, 1, 2)
    np.testing.assert_array_equal(got[0, 0], f32([4, 2]))


# ----------------------------------------------------------------------------- activations


def test_bnll_does_not_overflow_for_large_magnitudes() -> None:
    x = f32([-1000.0, -50.0, 0.0, 1.0, 50.0, 1000.0, 3e38])
    got = one("BNLL", x)
    assert np.all(np.isfinite(got))  # the naive log(1 + exp(x)) is inf from x = 89 on in float32
    # log(1 + e^x): ~0 for very negative x, log 2 at 0, log(1 + e) = 1.3132617 at 1, x itself for large x
    np.testing.assert_allclose(got, f32([0.0, 0.0, math.log(2.0), 1.3132616875, 50.0, 1000.0, 3e38]),
                               rtol=1e-6, atol=1e-20)


def test_power_with_power_2_and_shift() -> None:
    x = f32([-1.0, 0.0, 0.5, 2.0])
    got = one("Power", x, power_param={"power": 2.0, "scale": 2.0, "shift": 1.0})
    np.testing.assert_array_equal(got, f32([1.0, 1.0, 4.0, 25.0]))  # (1 + 2x)^2
    got = one("Power", x, power_param={"power": 0.5, "scale": 1.0, "shift": 2.0})
    np.testing.assert_allclose(got, f32([1.0, math.sqrt(2), math.sqrt(2.5), 2.0]), rtol=1e-6)
    # power * scale == 0: the input is ignored; shift ** power, or 1 for power 0
    np.testing.assert_array_equal(one("Power", x, power_param={"power": 2.0, "scale": 0.0, "shift": 3.0}),
                                  f32([9.0] * 4))
    np.testing.assert_array_equal(one("Power", x, power_param={"power": 0.0, "scale": 5.0, "shift": 3.0}),
                                  f32([1.0] * 4))
    np.testing.assert_array_equal(one("Power", x, power_param={}), x)


def test_exp_with_base_e_and_base_2() -> None:
    x = f32([0.0, 0.5, -1.0])
    got = one("Exp", x, exp_param={"base": -1.0, "scale": 2.0, "shift": 1.0})
    np.testing.assert_allclose(got, f32([math.e, math.e**2, math.e**-1]), rtol=1e-6)  # e^(1 + 2x)
    got = one("Exp", f32([0.0, 1.0, 3.0]), exp_param={"base": 2.0, "scale": 1.0, "shift": 1.0})
    np.testing.assert_allclose(got, f32([2.0, 4.0, 16.0]), rtol=1e-6)  # 2^(1 + x)
    got = one("Exp", f32([1.0, 2.0]), exp_param={"base": 10.0, "scale": 0.5, "shift": 0.0})
    np.testing.assert_allclose(got, f32([math.sqrt(10), 10.0]), rtol=1e-6)
    np.testing.assert_allclose(one("Exp", f32([1.0]), exp_param={}), f32([math.e]), rtol=1e-7)


def test_log_with_bases_scale_and_shift() -> None:
    np.testing.assert_allclose(one("Log", f32([1.0, math.e, 0.5]), log_param={}), f32([0.0, 1.0, math.log(0.5)]),
                               rtol=1e-6)
    got = one("Log", f32([5.0, 50.0]), log_param={"base": 10.0, "scale": 2.0, "shift": 0.0})
    np.testing.assert_allclose(got, f32([1.0, 2.0]), rtol=1e-6)  # log10(2x)
    got = one("Log", f32([1.0, 3.0, 7.0]), log_param={"base": 2.0, "scale": 1.0, "shift": 1.0})
    np.testing.assert_allclose(got, f32([1.0, 2.0, 3.0]), rtol=1e-6)  # log2(x + 1)
    got = one("Log", f32([0.0, -1.0]), log_param={})
    assert got[0] == -np.inf and np.isnan(got[1])  # Caffe computes through, without a word


@pytest.mark.parametrize(
    ("type_", "params", "match"),
    [
        ("Exp", {"exp_param": {"base": 0.0}}, "strictly positive"),
        ("Exp", {"exp_param": {"base": -2.0}}, "strictly positive"),
        ("Log", {"log_param": {"base": -3.0}}, "strictly positive"),
        ("Log", {"log_param": {"base": 1.0}}, "log\\(base\\) = 0"),
    ],
)
def test_exp_and_log_refuse_the_bases_caffe_checks(type_: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(ShapeInferenceError, match=match):
        shapes_strict({"b0": (2,)}, make(type_, ["b0"], ["t0"], **params))
    with pytest.raises(ShapeInferenceError, match=match):
        one(type_, f32([1.0]), **params)


def test_exp_with_base_1_is_allowed_and_constant() -> None:
    # Caffe only checks base > 0 for Exp: log(1) = 0, so every value is 1 ** (shift + scale x) = 1
    np.testing.assert_array_equal(one("Exp", f32([0.0, 5.0]), exp_param={"base": 1.0}), f32([1.0, 1.0]))


def test_elu_threshold_relu_and_relu6() -> None:
    x = f32([-1.0, 0.0, 2.0])
    np.testing.assert_allclose(one("ELU", x, elu_param={"alpha": 0.5}), f32([0.5 * (math.exp(-1) - 1), 0.0, 2.0]),
                               rtol=1e-6)
    np.testing.assert_allclose(one("ELU", x, elu_param={}), f32([math.exp(-1) - 1, 0.0, 2.0]), rtol=1e-6)
    got = one("Threshold", f32([0.4, 0.5, 0.6, np.nan, -np.inf]), threshold_param={"threshold": 0.5})
    np.testing.assert_array_equal(got, f32([0.0, 0.0, 1.0, 0.0, 0.0]))  # strictly greater; NaN > t is false
    np.testing.assert_array_equal(one("Threshold", x, threshold_param={}), f32([0.0, 0.0, 1.0]))
    y = f32([-2.0, -0.5, 0.0, 3.0, 6.0, 7.5])
    np.testing.assert_array_equal(one("ReLU", y, relu_param={"negative_slope": 0.0}), f32([0, 0, 0, 3, 6, 7.5]))
    np.testing.assert_array_equal(one("ReLU", y, relu_param={"negative_slope": 0.25}),
                                  f32([-0.5, -0.125, 0, 3, 6, 7.5]))
    np.testing.assert_array_equal(one("ReLU6", y), f32([0, 0, 0, 3, 6, 6]))
    # Caffe forms max(x, 0) + slope * min(x, 0) even for slope 0: 0 * -inf is NaN there
    got = one("ReLU", f32([-np.inf, np.inf]), relu_param={"negative_slope": 0.0})
    assert np.isnan(got[0]) and got[1] == np.inf
    np.testing.assert_array_equal(one("ReLU", f32([-np.inf]), relu_param={"negative_slope": 0.5}), f32([-np.inf]))


def test_relu6_with_a_slope_is_refused_before_the_run() -> None:
    layer = make("ReLU6", ["x"], ["y"], relu_param={"negative_slope": 0.1})
    net = Net(name="t", layers=[layer], inputs={"x": (1, 2)})
    assert any("negative_slope" in line for line in unsupported_layers(net))
    with pytest.raises(UnsupportedModelError, match="ReLU6"):
        caffeport.run(net, {"x": np.zeros((1, 2), np.float32)})


def test_sigmoid_tanh_absval_swish_clip_dropout() -> None:
    x = f32([-100.0, -1.0, 0.0, 2.0, 100.0])
    sig = [0.0, 1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-2)), 1.0]
    np.testing.assert_allclose(one("Sigmoid", x), f32(sig), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(one("TanH", x), f32([-1.0, math.tanh(-1), 0.0, math.tanh(2), 1.0]), rtol=1e-6)
    np.testing.assert_array_equal(one("AbsVal", x), f32([100, 1, 0, 2, 100]))
    # x * sigmoid(beta x), beta 2: -1 * sigmoid(-2), 0, 2 * sigmoid(4)
    got = one("Swish", f32([-1.0, 0.0, 2.0]), swish_param={"beta": 2.0})
    np.testing.assert_allclose(got, f32([-1 / (1 + math.exp(2)), 0.0, 2 / (1 + math.exp(-4))]), rtol=1e-6)
    np.testing.assert_allclose(one("Swish", f32([1.0]), swish_param={}), f32([1 / (1 + math.exp(-1))]), rtol=1e-6)
    # std::max(min, std::min(x, max)): NaN becomes min
    got = one("Clip", f32([-5.0, -1.0, 0.3, 9.0, np.nan]), clip_param={"min": -1.0, "max": 1.0})
    np.testing.assert_array_equal(got, f32([-1.0, -1.0, 0.3, 1.0, -1.0]))
    np.testing.assert_array_equal(one("Dropout", x, dropout_param={"dropout_ratio": 0.5}), x)  # no rescaling


def test_clip_without_its_required_bounds_is_listed_before_the_run() -> None:
    layer = make("Clip", ["x"], ["y"], clip_param={"min": 0.0})
    net = Net(name="t", layers=[layer], inputs={"x": (1, 2)})
    assert any("clip_param has no max" in line for line in unsupported_layers(net))


ACTIVATIONS: list[tuple[str, dict[str, Any]]] = [
    ("ReLU", {"relu_param": {"negative_slope": 0.1}}),
    ("ReLU6", {}),
    ("Sigmoid", {}),
    ("TanH", {}),
    ("AbsVal", {}),
    ("Power", {"power_param": {"power": 2.0, "scale": 1.0, "shift": 1.0}}),
    ("Power", {"power_param": {"power": 3.0, "scale": 0.0, "shift": 2.0}}),
    ("Exp", {"exp_param": {"base": 2.0, "scale": 1.0, "shift": 1.0}}),
    ("Log", {"log_param": {"base": 10.0, "scale": 1.0, "shift": 1.0}}),
    ("BNLL", {}),
    ("ELU", {"elu_param": {"alpha": 1.0}}),
    ("Threshold", {"threshold_param": {"threshold": 0.0}}),
    ("Swish", {"swish_param": {"beta": 1.0}}),
    ("Clip", {"clip_param": {"min": -1.0, "max": 1.0}}),
    ("Dropout", {}),
]


@pytest.mark.parametrize(("type_", "params"), ACTIVATIONS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(ACTIVATIONS)])
@pytest.mark.parametrize("shape", [(), (7,), (1, 1, 1, 1, 3), (2, 0, 3), (3, 1, 5, 1)])
def test_activations_take_0d_empty_and_odd_shapes(type_: str, params: dict[str, Any], shape: Shape) -> None:
    x = np.linspace(-2.0, 2.0, num=max(1, math.prod(shape)), dtype=np.float32)[: math.prod(shape)].reshape(shape)
    got = one(type_, x, **params)
    assert got.shape == shape
    # the same values as the flat input's, element by element
    flat = one(type_, x.reshape(-1), **params)
    np.testing.assert_array_equal(got.reshape(-1), flat)


def test_activation_key_params() -> None:
    def kp(type_: str, **params: Any) -> str:
        return layer_type(type_).key_params(make(type_, [], [], **params))

    assert kp("Power", power_param={"power": 2.0, "scale": 1.0, "shift": 0.5}) == "power=2 scale=1 shift=0.5"
    assert kp("Exp", exp_param={"base": -1.0, "scale": 1.0, "shift": 0.0}) == "base=e scale=1 shift=0"
    assert kp("Log", log_param={"base": 2.0, "scale": 1.0, "shift": 1.0}) == "base=2 scale=1 shift=1"
    assert kp("ELU", elu_param={"alpha": 1.0}) == ""
    assert kp("ELU", elu_param={"alpha": 0.5}) == "alpha=0.5"
    assert kp("Threshold", threshold_param={"threshold": 0.5}) == "threshold=0.5"
    assert kp("Clip", clip_param={"min": 0.0, "max": 6.0}) == "min=0 max=6"
    assert kp("Swish", swish_param={"beta": 1.0}) == ""
    assert kp("ReLU", relu_param={"negative_slope": 0.0}) == ""


# ----------------------------------------------------------------------------- DummyData


def test_dummy_data_constant_fillers() -> None:
    # no filler: zeros; one filler: all tops; one per top: each its own
    layer = make("DummyData", [], ["a", "b"], dummy_data_param={"shape": [{"dim": [1, 2]}, {"dim": [3]}]})
    a, b = layer_type("DummyData").forward(layer, [])
    np.testing.assert_array_equal(a, np.zeros((1, 2), np.float32))
    np.testing.assert_array_equal(b, np.zeros(3, np.float32))
    params = {"shape": [{"dim": [2, 2]}], "data_filler": [{"type": "constant", "value": 3.5}]}
    a, b = layer_type("DummyData").forward(make("DummyData", [], ["a", "b"], dummy_data_param=params), [])
    np.testing.assert_array_equal(a, np.full((2, 2), 3.5, np.float32))
    np.testing.assert_array_equal(b, np.full((2, 2), 3.5, np.float32))
    params = {"num": [1], "channels": [2], "height": [1], "width": [1],
              "data_filler": [{"type": "constant", "value": 1.0}, {"type": "constant", "value": -2.0}]}
    layer = make("DummyData", [], ["a", "b"], dummy_data_param=params)
    a, b = layer_type("DummyData").forward(layer, [])
    assert a.shape == b.shape == (1, 2, 1, 1)
    assert a.dtype == np.float32 and np.all(a == 1.0) and np.all(b == -2.0)
    assert layer_type("DummyData").key_params(layer) == "filler=constant 1, constant -2"


def test_dummy_data_feeds_a_net() -> None:
    x = f32([[1.0, 2.0, 3.0]])
    dummy = make("DummyData", [], ["d"], name="D",
                 dummy_data_param={"shape": [{"dim": [1, 3]}], "data_filler": [{"type": "constant", "value": 10.0}]})
    add = make("Eltwise", ["x", "d"], ["y"], name="E", eltwise_param={"operation": "SUM", "coeff": [1.0, -1.0]})
    np.testing.assert_array_equal(run_net({"x": x}, dummy, add)["y"], f32([[-9.0, -8.0, -7.0]]))


def test_dummy_data_random_fillers_are_refused() -> None:
    params = {"shape": [{"dim": [1, 3]}], "data_filler": [{"type": "gaussian", "std": 1.0}]}
    net = Net(name="t", layers=[make("DummyData", [], ["d"], dummy_data_param=params)], inputs={})
    assert any("'gaussian'" in line for line in unsupported_layers(net))
    with pytest.raises(UnsupportedModelError, match="gaussian"):
        caffeport.run(net, {})
    params = {"shape": [{"dim": [1]}], "data_filler": [{"type": "constant"}] * 3}
    with pytest.raises(ShapeInferenceError, match="3 data_filler for 2 tops"):
        layer_type("DummyData").forward(make("DummyData", [], ["a", "b"], dummy_data_param=params), [])


# ----------------------------------------------------------------------------- OpenCV 4's Caffe runtime as an oracle

#: layer bodies OpenCV's Caffe importer runs with Caffe's semantics. Left out: Threshold, Clip, Tile, Reduction and
#: ArgMax (OpenCV has no Caffe importer for them), and Log with parameters (OpenCV ignores log_param: plain ln x).
OPENCV_CASES: dict[str, str] = {
    "relu-slope": 'type: "ReLU" bottom: "x" top: "o" relu_param { negative_slope: 0.1 }',
    "relu6": 'type: "ReLU6" bottom: "x" top: "o"',
    "sigmoid": 'type: "Sigmoid" bottom: "x" top: "o"',
    "tanh": 'type: "TanH" bottom: "x" top: "o"',
    "absval": 'type: "AbsVal" bottom: "x" top: "o"',
    "power": 'type: "Power" bottom: "x" top: "o" power_param { power: 2 scale: 0.5 shift: 1 }',
    "exp-base-2": 'type: "Exp" bottom: "x" top: "o" exp_param { base: 2 scale: 0.5 shift: 1 }',
    "exp-base-e": 'type: "Exp" bottom: "x" top: "o" exp_param { scale: 0.5 shift: 1 }',
    "log": 'type: "Log" bottom: "p" top: "o"',
    "bnll": 'type: "BNLL" bottom: "x" top: "o"',
    "elu": 'type: "ELU" bottom: "x" top: "o" elu_param { alpha: 0.7 }',
    "swish": 'type: "Swish" bottom: "x" top: "o"',
    "dropout": 'type: "Dropout" bottom: "x" top: "o" dropout_param { dropout_ratio: 0.3 }',
    "eltwise-sum-coeff": 'type: "Eltwise" bottom: "x" bottom: "y" top: "o" '
                         'eltwise_param { operation: SUM coeff: 1 coeff: -1 }',
    "eltwise-prod": 'type: "Eltwise" bottom: "x" bottom: "y" top: "o" eltwise_param { operation: PROD }',
    "eltwise-max": 'type: "Eltwise" bottom: "x" bottom: "y" top: "o" eltwise_param { operation: MAX }',
    "concat-axis-2": 'type: "Concat" bottom: "x" bottom: "y" top: "o" concat_param { axis: 2 }',
    "crop-per-axis": 'type: "Crop" bottom: "x" bottom: "small" top: "o" crop_param { axis: 1 offset: 1 offset: 2 '
                     'offset: 3 }',
    "crop-one-offset": 'type: "Crop" bottom: "x" bottom: "small" top: "o" crop_param { axis: 2 offset: 1 }',
    "flatten-axis-2": 'type: "Flatten" bottom: "x" top: "o" flatten_param { axis: 2 }',
    "reshape-0-minus-1": 'type: "Reshape" bottom: "x" top: "o" reshape_param { shape { dim: 0 dim: -1 dim: 3 } }',
    "permute-0231": 'type: "Permute" bottom: "x" top: "o" permute_param { order: 0 order: 2 order: 3 order: 1 }',
    "slice-points": 'type: "Slice" bottom: "x" top: "o" top: "o2" slice_param { axis: 3 slice_point: 2 }',
}


@pytest.mark.parametrize("case", sorted(OPENCV_CASES))
def test_forward_agrees_with_opencv(case: str, tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2", reason="OpenCV 4 (opencv-python-headless) is the oracle here")
    rng = np.random.default_rng(7)
    inputs = {
        "x": (rng.standard_normal((2, 4, 5, 6)) * 3).astype(np.float32),
        "y": (rng.standard_normal((2, 4, 5, 6)) * 3).astype(np.float32),
        "p": rng.uniform(0.01, 20.0, (2, 4, 5, 6)).astype(np.float32),
        "small": np.zeros((2, 2, 3, 3), np.float32),
    }
    body = OPENCV_CASES[case]
    used = [name for name in inputs if f'bottom: "{name}"' in body]
    head = "".join(f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in inputs[name].shape)} }}\n'
                   for name in used)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f'name: "t"\n{head}layer {{ name: "L" {body} }}\n')
    ours = caffeport.run(caffeport.read(prototxt=prototxt), {name: inputs[name] for name in used}, all_layers=True)

    net = cv2.dnn.readNetFromCaffe(str(prototxt))
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name in used:
        net.setInput(inputs[name], name)
    theirs = net.forward(None, "L") if ' top: "o2"' in body else [net.forward("L")]
    tops = [key for key in ours if key.startswith("L/")]
    assert len(tops) == len(theirs)
    for key, want in zip(tops, theirs, strict=True):
        got = ours[key]
        assert got.size == want.size, f"{key}: {got.shape} vs OpenCV's {want.shape}"
        want = np.asarray(want).reshape(got.shape)
        error = np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-6)
        assert error <= 1e-6, f"{key}: relative error {error:.2e} against OpenCV"
