"""Forward and shape rules of the forks' layers: Interp, Upsample (YOLO nearest and SegNet unpooling),
ShuffleChannel, Reorg.

Expected values come from deliberately naive loops over output positions written
from the fork sources' formulas (quoted next to each reference), from numbers
worked out by hand, and, where OpenCV 4's Caffe importer implements the layer
(Interp, ShuffleChannel, Reorg), from OpenCV's own forward. Expected shapes are
worked out by hand in the comment next to each case.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.errors import ModelStructureError, ShapeInferenceError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers import layer_type
from caffeport.layers.shapes import infer_shapes


def make(type_: str, bottoms: list[str], tops: list[str], name: str = "L", **params: Any) -> Layer:
    return Layer(name=name, type=type_, bottoms=bottoms, tops=tops, params=params)


def top_shape(type_: str, *in_shapes: Shape, **params: Any) -> Shape | None:
    """The top shape of one layer fed bottoms of the given shapes (strict: a rule's error raises)."""
    names = [f"b{i}" for i in range(len(in_shapes))]
    layer = make(type_, names, ["t"], **params)
    infer_shapes(Net(name="t", layers=[layer], inputs=dict(zip(names, in_shapes, strict=True))), strict=True)
    return layer.top_shapes[0]


def expect_shape_error(match: str, type_: str, *in_shapes: Shape, **params: Any) -> None:
    with pytest.raises(ShapeInferenceError, match=match) as info:
        top_shape(type_, *in_shapes, **params)
    assert info.value.layer == "L"


def forward(type_: str, *bottoms: np.ndarray, **params: Any) -> np.ndarray:
    """One layer run through `caffeport.run` (so the pre-flight and the walker see it too)."""
    names = [f"b{i}" for i in range(len(bottoms))]
    layer = make(type_, names, ["t"], **params)
    net = Net(name="t", layers=[layer], inputs={n: b.shape for n, b in zip(names, bottoms, strict=True)})
    out = caffeport.run(net, dict(zip(names, bottoms, strict=True)))["t"]
    assert out.dtype == np.float32
    return out


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def opencv_forward(tmp_path: Path, type_: str, param_text: str, x: np.ndarray) -> np.ndarray:
    """OpenCV 4's Caffe runtime on a one-layer prototxt (skips when OpenCV is not installed)."""
    cv2 = pytest.importorskip("cv2")
    dims = " ".join(f"dim: {d}" for d in x.shape)
    path = tmp_path / f"{type_}.prototxt"
    path.write_text(f'name: "t"\ninput: "data"\ninput_shape {{ {dims} }}\n'
                    f'layer {{ name: "l" type: "{type_}" bottom: "data" top: "out" {param_text} }}\n')
    net = cv2.dnn.readNetFromCaffe(str(path))
    net.setInput(x)
    return np.asarray(net.forward())


# ============================================================================= Interp


def interp_reference(x: np.ndarray, out_h: int, out_w: int, pad_beg: int = 0, pad_end: int = 0) -> np.ndarray:
    """``caffe_cpu_interp2`` restated with one float32 scalar per step, looping over every output pixel."""
    f32 = np.float32
    n, c, h, w = x.shape
    y_off = x_off = -pad_beg
    h1, w1 = h + pad_beg + pad_end, w + pad_beg + pad_end
    out = np.zeros((n, c, out_h, out_w), dtype=np.float32)
    for b in range(n):
        for ch in range(c):
            src = x[b, ch]
            for y2 in range(out_h):
                for x2 in range(out_w):
                    if (h1, w1) == (out_h, out_w):
                        out[b, ch, y2, x2] = src[y_off + y2, x_off + x2]
                        continue
                    rh = f32(h1 - 1) / f32(out_h - 1) if out_h > 1 else f32(0)
                    rw = f32(w1 - 1) / f32(out_w - 1) if out_w > 1 else f32(0)
                    yr, xr = rh * f32(y2), rw * f32(x2)
                    y1, x1 = int(yr), int(xr)
                    yp, xp = (1 if y1 < h1 - 1 else 0), (1 if x1 < w1 - 1 else 0)
                    ly1, lx1 = yr - f32(y1), xr - f32(x1)
                    ly0, lx0 = f32(1) - ly1, f32(1) - lx1
                    p = src[y_off + y1 :, x_off + x1 :]
                    out[b, ch, y2, x2] = (ly0 * (lx0 * p[0, 0] + lx1 * p[0, xp])
                                          + ly1 * (lx0 * p[yp, 0] + lx1 * p[yp, xp]))
    return out


def test_interp_zoom_by_hand() -> None:
    # 2x2 zoomed by 2 -> 3x3 with corners aligned: the midpoints are the averages
    x = np.array([[[[0, 1], [2, 3]]]], dtype=np.float32)
    got = forward("Interp", x, interp_param={"zoom_factor": 2})
    expected = [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]]
    np.testing.assert_array_equal(got[0, 0], np.array(expected, dtype=np.float32))


@pytest.mark.parametrize(
    ("shape", "params", "out_hw"),
    [
        ((2, 3, 5, 7), {"zoom_factor": 3}, (13, 19)),  # 5 + 4*2, 7 + 6*2
        ((1, 2, 9, 8), {"shrink_factor": 2}, (5, 4)),  # (9-1)//2+1, (8-1)//2+1
        ((1, 2, 9, 7), {"shrink_factor": 2, "zoom_factor": 3}, (13, 10)),  # shrink 5x4, zoom 13x10
        ((2, 1, 4, 6), {"height": 9, "width": 3}, (9, 3)),
        ((1, 1, 4, 6), {"height": 1, "width": 5}, (1, 5)),  # out 1 row: ratio 0, row 0 only
        ((1, 2, 9, 7), {"zoom_factor": 2, "pad_beg": -1, "pad_end": -2}, (11, 7)),  # eff 6x4 -> 11x7
        ((1, 1, 6, 6), {"shrink_factor": 3, "pad_beg": -2}, (2, 2)),  # eff 4x4 -> (4-1)//3+1 = 2
    ],
)
def test_interp_matches_the_naive_loop(shape: Shape, params: dict[str, Any], out_hw: tuple[int, int]) -> None:
    x = rand(*shape)
    got = forward("Interp", x, interp_param=params)
    assert got.shape == (shape[0], shape[1], *out_hw)
    expected = interp_reference(x, *out_hw, pad_beg=params.get("pad_beg", 0), pad_end=params.get("pad_end", 0))
    np.testing.assert_array_equal(got, expected)


def test_interp_keeps_the_corners_and_never_modifies_its_bottom() -> None:
    x = rand(1, 2, 4, 5)
    before = x.copy()
    got = forward("Interp", x, interp_param={"height": 7, "width": 11})
    np.testing.assert_array_equal(x, before)
    np.testing.assert_allclose(got[..., [0, 0, -1, -1], [0, -1, 0, -1]], x[..., [0, 0, -1, -1], [0, -1, 0, -1]],
                               rtol=1e-6)


def test_interp_same_size_is_a_plain_copy_of_the_crop() -> None:
    # Caffe copies when the cropped input and the output have the same size; interpolating would turn the
    # 0-weighted infinite neighbour into NaN (0 * inf)
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(1, 2, 5, 6)
    x[0, 0, 4, 5] = np.inf
    got = forward("Interp", x, interp_param={"height": 3, "width": 4, "pad_beg": -1, "pad_end": -1})
    np.testing.assert_array_equal(got, x[:, :, 1:4, 1:5])
    got = forward("Interp", x, interp_param={"height": 5, "width": 6})
    np.testing.assert_array_equal(got, x)


def test_interp_agrees_with_opencv(tmp_path: Path) -> None:
    x = rand(2, 3, 5, 7, seed=3)
    for text, params in [("interp_param { zoom_factor: 2 }", {"zoom_factor": 2}),
                         ("interp_param { height: 9 width: 4 }", {"height": 9, "width": 4})]:
        expected = opencv_forward(tmp_path, "Interp", text, x)
        np.testing.assert_allclose(forward("Interp", x, interp_param=params), expected, rtol=1e-5, atol=1e-6)


def test_interp_shape_rules() -> None:
    assert top_shape("Interp", (1, 3, 5, 8), interp_param={"zoom_factor": 2}) == (1, 3, 9, 15)
    # zoom alone wins over height/width: the rules are tried in Caffe's order
    assert top_shape("Interp", (1, 3, 5, 8), interp_param={"zoom_factor": 2, "height": 3, "width": 3}) == (1, 3, 9, 15)
    # height/width win over shrink+zoom both given
    p = {"zoom_factor": 2, "shrink_factor": 2, "height": 3, "width": 4}
    assert top_shape("Interp", (1, 3, 5, 8), interp_param=p) == (1, 3, 3, 4)
    # shrink 8 on 17: (17-1)//8+1 = 3; on 16: 15//8+1 = 2
    assert top_shape("Interp", (2, 1, 17, 16), interp_param={"shrink_factor": 8}) == (2, 1, 3, 2)
    # shrink then zoom on odd sizes: 17 -> 9 -> 9 + 8*3 = 33; 10 -> 5 -> 17
    assert top_shape("Interp", (1, 1, 17, 10), interp_param={"shrink_factor": 2, "zoom_factor": 4}) == (1, 1, 33, 17)
    # negative pads crop: 10 - 1 - 3 = 6 -> zoom 2 = 11
    assert top_shape("Interp", (1, 1, 10, 10), interp_param={"zoom_factor": 2, "pad_beg": -1, "pad_end": -3}) == (
        1, 1, 11, 11)
    # a 2-D bottom is (num, channels) with height = width = 1 (Blob::LegacyShape); the top is 4-D
    assert top_shape("Interp", (2, 5), interp_param={"height": 3, "width": 2}) == (2, 5, 3, 2)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"zoom_factor": 2, "pad_beg": 1}, "non-positive padding"),
        ({"zoom_factor": 2, "pad_end": 2}, "non-positive padding"),
        ({"zoom_factor": 0}, "zoom_factor must be >= 1"),
        ({"shrink_factor": 0}, "shrink_factor must be >= 1"),
        ({}, "needs zoom_factor"),
        ({"height": 4}, "needs zoom_factor"),
        ({"zoom_factor": 2, "pad_beg": -3, "pad_end": -2}, "must stay positive"),
        ({"height": 0, "width": 4}, "must be positive"),
    ],
)
def test_interp_refusals(params: dict[str, Any], match: str) -> None:
    expect_shape_error(match, "Interp", (1, 1, 5, 5), interp_param=params)


def test_interp_refuses_five_axes_and_two_bottoms() -> None:
    expect_shape_error("5-D", "Interp", (1, 1, 2, 2, 2), interp_param={"zoom_factor": 2})
    expect_shape_error("exactly one bottom", "Interp", (1, 1, 2, 2), (1, 1, 4, 4), interp_param={"zoom_factor": 2})
    layer = make("Interp", ["a", "b"], ["t"], interp_param={"zoom_factor": 2})
    assert "exactly one bottom" in (layer_type("Interp").unsupported(layer) or "")
    assert layer_type("Interp").unsupported(make("Interp", ["a"], ["t"])) is None


# ============================================================================= Upsample, one bottom (YOLOv3 nearest)


def nearest_reference(x: np.ndarray, scale: int) -> np.ndarray:
    """darknet2caffe's loop: ``out[n, c, y, x] = in[n, c, y / scale, x / scale]`` over every output position."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, h * scale, w * scale), dtype=np.float32)
    for b in range(n):
        for ch in range(c):
            for y in range(h * scale):
                for xx in range(w * scale):
                    out[b, ch, y, xx] = x[b, ch, y // scale, xx // scale]
    return out


@pytest.mark.parametrize(("shape", "scale"), [((1, 2, 3, 5), 2), ((2, 1, 1, 3), 3), ((1, 2, 2, 2), 1)])
def test_upsample_nearest(shape: Shape, scale: int) -> None:
    x = rand(*shape)
    np.testing.assert_array_equal(forward("Upsample", x, upsample_param={"scale": scale}),
                                  nearest_reference(x, scale))


def test_upsample_nearest_by_hand() -> None:
    x = np.array([[[[1, 2], [3, 4]]]], dtype=np.float32)
    got = forward("Upsample", x, upsample_param={"scale": 2})
    expected = [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    np.testing.assert_array_equal(got[0, 0], np.array(expected, dtype=np.float32))


def test_upsample_nearest_shapes() -> None:
    assert top_shape("Upsample", (1, 256, 13, 13), upsample_param={"scale": 2}) == (1, 256, 26, 26)
    assert top_shape("Upsample", (2, 3, 5, 7), upsample_param={"scale": 3}) == (2, 3, 15, 21)
    # the YOLO fork's proto default is scale 1; Reshape scales the last two axes whatever the rank
    assert top_shape("Upsample", (2, 3, 5, 7), upsample_param={}) == (2, 3, 5, 7)
    assert top_shape("Upsample", (4, 5), upsample_param={"scale": 2}) == (8, 10)
    expect_shape_error("scale must be >= 1", "Upsample", (1, 1, 2, 2), upsample_param={"scale": 0})
    expect_shape_error("belong to SegNet", "Upsample", (1, 1, 2, 2), upsample_param={"upsample_h": 4, "upsample_w": 4})


# ============================================================================= Upsample, two bottoms (SegNet)


def max_pool_with_mask(x: np.ndarray, k: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's MAX pooling (CEIL rounding, no pad) with its argmax mask: flat index ``hh * W + ww`` in the plane."""
    n, c, h, w = x.shape
    ph, pw = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
    top = np.zeros((n, c, ph, pw), dtype=np.float32)
    mask = np.zeros((n, c, ph, pw), dtype=np.float32)
    for b in range(n):
        for ch in range(c):
            for py in range(ph):
                for px in range(pw):
                    best, arg = -np.inf, -1
                    for hh in range(py * s, min(py * s + k, h)):
                        for ww in range(px * s, min(px * s + k, w)):
                            if x[b, ch, hh, ww] > best:
                                best, arg = x[b, ch, hh, ww], hh * w + ww
                    top[b, ch, py, px], mask[b, ch, py, px] = best, arg
    return top, mask


def unpool_reference(x: np.ndarray, mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """SegNet's loop: zeros, then ``top[int(mask[i])] = bottom[i]`` per plane, in input order."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h * out_w), dtype=np.float32)
    for b in range(n):
        for ch in range(c):
            for i in range(h * w):
                out[b, ch, int(mask[b, ch].flat[i])] = x[b, ch].flat[i]
    return out.reshape(n, c, out_h, out_w)


def test_segnet_unpooling_puts_the_maxima_back() -> None:
    x = rand(2, 3, 6, 8)
    pooled, mask = max_pool_with_mask(x, 2, 2)
    got = forward("Upsample", pooled, mask, upsample_param={"scale": 2})
    assert got.shape == (2, 3, 6, 8)
    np.testing.assert_array_equal(got, unpool_reference(pooled, mask, 6, 8))
    # every 2x2 window holds its maximum where it was and zeros elsewhere
    assert np.count_nonzero(got) == pooled.size
    np.testing.assert_array_equal(got[got != 0], x[got != 0])


def test_segnet_unpooling_odd_sizes() -> None:
    # 5x7 pooled 2/2 with CEIL -> 3x4; scale 2 with pad_out -> 3*2-1 = 5, 4*2-0 = 8 (wider than 7: fine)
    x = rand(1, 2, 5, 7, seed=1)
    pooled, mask = max_pool_with_mask(x, 2, 2)
    got = forward("Upsample", pooled, mask, upsample_param={"scale": 2, "pad_out_h": True})
    assert got.shape == (1, 2, 5, 8)
    np.testing.assert_array_equal(got, unpool_reference(pooled, mask, 5, 8))
    # explicit upsample_h / upsample_w: the pooling's input size exactly
    got = forward("Upsample", pooled, mask, upsample_param={"upsample_h": 5, "upsample_w": 7})
    assert got.shape == (1, 2, 5, 7)
    np.testing.assert_array_equal(got, unpool_reference(pooled, mask, 5, 7))


def test_segnet_unpooling_by_hand_later_positions_win() -> None:
    x = np.array([[[[1, 2], [3, 4]]]], dtype=np.float32)
    mask = np.array([[[[0, 5], [5, 15.9]]]], dtype=np.float32)  # 15.9 truncates to 15; 3 overwrites 2 at index 5
    got = forward("Upsample", x, mask, upsample_param={"scale": 2})
    expected = np.zeros(16, dtype=np.float32)
    expected[[0, 5, 15]] = [1, 3, 4]
    np.testing.assert_array_equal(got.reshape(-1), expected)


def test_segnet_unpooling_refuses_a_mask_past_the_plane() -> None:
    x = np.ones((1, 1, 2, 2), dtype=np.float32)
    mask = np.array([[[[0, 1], [2, 16]]]], dtype=np.float32)  # the 4x4 plane has indices 0..15
    with pytest.raises(ModelStructureError, match="outside the 4x4 output plane"):
        forward("Upsample", x, mask, upsample_param={"scale": 2})


def test_segnet_shapes() -> None:
    s = (1, 64, 23, 30)
    assert top_shape("Upsample", s, s, upsample_param={}) == (1, 64, 46, 60)  # scale defaults to 2
    assert top_shape("Upsample", s, s, upsample_param={"scale_h": 3, "scale_w": 2}) == (1, 64, 69, 60)
    assert top_shape("Upsample", s, s, upsample_param={"scale": 2, "pad_out_h": True, "pad_out_w": True}) == (
        1, 64, 45, 59)
    assert top_shape("Upsample", s, s, upsample_param={"upsample_h": 45, "upsample_w": 60}) == (1, 64, 45, 60)
    # upsample_h/w make the other fields irrelevant, even the invalid scale_h-with-scale combination
    assert top_shape("Upsample", s, s, upsample_param={"upsample_h": 45, "upsample_w": 60, "scale": 3,
                                                       "scale_h": 2}) == (1, 64, 45, 60)


@pytest.mark.parametrize(
    ("params", "mask", "match"),
    [
        ({}, (1, 2, 3, 5), "must have the data's shape"),
        ({"scale_h": 2}, (1, 2, 3, 4), "needs upsample_h and upsample_w"),
        ({"scale": 2, "scale_h": 2, "scale_w": 2}, (1, 2, 3, 4), "needs upsample_h and upsample_w"),
        ({"scale": 1}, (1, 2, 3, 4), "must be > 1"),
        ({"upsample_h": 1, "upsample_w": 5}, (1, 2, 3, 4), "must be > 1"),
        ({"scale": 3, "pad_out_w": True}, (1, 2, 3, 4), "need a scale of 2"),
        ({}, (1, 2, 12), "4-D data and mask"),
    ],
)
def test_segnet_refusals(params: dict[str, Any], mask: Shape, match: str) -> None:
    expect_shape_error(match, "Upsample", (1, 2, 3, 4), mask, upsample_param=params)


# ============================================================================= ShuffleChannel


def shuffle_reference(x: np.ndarray, group: int) -> np.ndarray:
    """farmingyard's ``Resize_cpu``: input channel ``i * (C/g) + j`` is copied to output channel ``j * g + i``."""
    n, c = x.shape[:2]
    cols = c // group
    out = np.zeros_like(x)
    for b in range(n):
        for i in range(group):
            for j in range(cols):
                out[b, j * group + i] = x[b, i * cols + j]
    return out


@pytest.mark.parametrize(("shape", "group"), [((2, 6, 3, 5), 2), ((1, 12, 2, 2), 3), ((1, 4, 3, 3), 1),
                                              ((1, 6, 1, 1), 6)])
def test_shuffle_channel(shape: Shape, group: int) -> None:
    x = rand(*shape)
    np.testing.assert_array_equal(forward("ShuffleChannel", x, shuffle_channel_param={"group": group}),
                                  shuffle_reference(x, group))


def test_shuffle_channel_by_hand() -> None:
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)  # each channel holds its own number
    got = forward("ShuffleChannel", x, shuffle_channel_param={"group": 2})
    assert got.reshape(-1).tolist() == [0, 3, 1, 4, 2, 5]
    got = forward("ShuffleChannel", x, shuffle_channel_param={"group": 3})
    assert got.reshape(-1).tolist() == [0, 2, 4, 1, 3, 5]


def test_shuffle_channel_agrees_with_opencv(tmp_path: Path) -> None:
    x = rand(2, 12, 3, 4, seed=5)
    for g in (2, 3, 4):
        expected = opencv_forward(tmp_path, "ShuffleChannel", f"shuffle_channel_param {{ group: {g} }}", x)
        np.testing.assert_array_equal(forward("ShuffleChannel", x, shuffle_channel_param={"group": g}), expected)


def test_shuffle_channel_shapes() -> None:
    assert top_shape("ShuffleChannel", (1, 240, 28, 28), shuffle_channel_param={"group": 3}) == (1, 240, 28, 28)
    # Reshape gives the legacy 4-D (num, channels, height, width)
    assert top_shape("ShuffleChannel", (2, 6), shuffle_channel_param={"group": 2}) == (2, 6, 1, 1)
    assert top_shape("ShuffleChannel", (2, 6, 3), shuffle_channel_param={}) == (2, 6, 3, 1)
    expect_shape_error("does not divide", "ShuffleChannel", (1, 6, 2, 2), shuffle_channel_param={"group": 4})
    expect_shape_error("must be > 0", "ShuffleChannel", (1, 6, 2, 2), shuffle_channel_param={"group": 0})


# ============================================================================= Reorg


def reorg_reference(x: np.ndarray, stride: int, reverse: bool) -> np.ndarray:
    """darknet's ``reorg_cpu`` over every bottom position, with the bottom's w, h, c and ``forward = reverse``."""
    batch, c, h, w = x.shape
    out_c = c // (stride * stride)
    src = x.reshape(-1)
    dst = np.zeros_like(src)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if reverse:
                        dst[out_index] = src[in_index]
                    else:
                        dst[in_index] = src[out_index]
    if reverse:
        return dst.reshape(batch, out_c, h * stride, w * stride)
    return dst.reshape(batch, c * stride * stride, h // stride, w // stride)


def test_reorg_by_hand() -> None:
    # C = 4, s = 2: C' = 1, so the bottom's 16 values are read as one 4x4 image and cut into its 2x2 phases:
    # out[k, j, i] = img[2j + k // 2, 2i + k % 2]
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 2, 2)
    got = forward("Reorg", x, reorg_param={"stride": 2})
    assert got.shape == (1, 16, 1, 1)
    assert got.reshape(-1).tolist() == [0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15]
    # reverse: channel o of a 1x1 pixel goes to (o // 2, o % 2) of the 2x2 output
    x = np.array([7, 8, 9, 10], dtype=np.float32).reshape(1, 4, 1, 1)
    got = forward("Reorg", x, reorg_param={"stride": 2, "reverse": True})
    np.testing.assert_array_equal(got, np.array([[[[7, 8], [9, 10]]]], dtype=np.float32))


@pytest.mark.parametrize(
    ("shape", "stride", "reverse"),
    [((2, 8, 4, 6), 2, False), ((1, 18, 6, 3), 3, False), ((1, 4, 2, 2), 1, False),
     ((2, 8, 3, 5), 2, True), ((1, 18, 2, 1), 3, True)],
)
def test_reorg_matches_darknets_loop(shape: Shape, stride: int, reverse: bool) -> None:
    x = rand(*shape)
    got = forward("Reorg", x, reorg_param={"stride": stride, "reverse": reverse})
    np.testing.assert_array_equal(got, reorg_reference(x, stride, reverse))


def test_reorg_agrees_with_opencv(tmp_path: Path) -> None:
    x = rand(2, 8, 4, 6, seed=7)
    expected = opencv_forward(tmp_path, "Reorg", "reorg_param { stride: 2 }", x)
    np.testing.assert_array_equal(forward("Reorg", x, reorg_param={"stride": 2}), expected)


def test_reorg_is_not_a_plain_space_to_depth() -> None:
    # with more channels than s^2 the bottom's memory is reinterpreted first (darknet's quirk)
    x = rand(1, 8, 2, 2, seed=2)
    plain = x.reshape(1, 8, 1, 2, 1, 2).transpose(0, 3, 5, 1, 2, 4).reshape(1, 32, 1, 1)
    assert not np.array_equal(forward("Reorg", x, reorg_param={"stride": 2}), plain)


def test_reorg_shapes() -> None:
    assert top_shape("Reorg", (1, 64, 26, 26), reorg_param={"stride": 2}) == (1, 256, 13, 13)
    assert top_shape("Reorg", (1, 64, 26, 26), reorg_param={}) == (1, 256, 13, 13)  # choasup's default stride 2
    assert top_shape("Reorg", (2, 16, 3, 5), reorg_param={"stride": 2, "reverse": True}) == (2, 4, 6, 10)
    assert top_shape("Reorg", (1, 18, 9, 3), reorg_param={"stride": 3}) == (1, 162, 3, 1)
    expect_shape_error("does not divide", "Reorg", (1, 4, 5, 4), reorg_param={"stride": 2})
    expect_shape_error("not a multiple of 4", "Reorg", (1, 6, 4, 4), reorg_param={"stride": 2})
    expect_shape_error("not a multiple of 4", "Reorg", (1, 6, 4, 4), reorg_param={"stride": 2, "reverse": True})
    expect_shape_error("4-D", "Reorg", (1, 4, 4), reorg_param={"stride": 2})
    expect_shape_error("stride must be >= 1", "Reorg", (1, 4, 4, 4), reorg_param={"stride": 0})


# ============================================================================= key_params and a whole net


def test_key_params() -> None:
    assert layer_type("Interp").key_params(make("Interp", ["a"], ["t"], interp_param={"zoom_factor": 2,
                                                                                     "pad_end": -1})) == (
        "zoom=2 pad=0,-1")
    assert layer_type("Upsample").key_params(make("Upsample", ["a"], ["t"], upsample_param={"scale": 2})) == (
        "nearest scale=2")
    assert layer_type("Upsample").key_params(make("Upsample", ["a", "m"], ["t"], upsample_param={})) == (
        "unpool scale=2")
    assert layer_type("ShuffleChannel").key_params(
        make("ShuffleChannel", ["a"], ["t"], shuffle_channel_param={"group": 3})) == "group=3"
    assert layer_type("Reorg").key_params(make("Reorg", ["a"], ["t"], reorg_param={"stride": 2})) == "stride=2"


PROTOTXT = """
name: "forks"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "c" top: "s" shuffle_channel_param { group: 2 } }
layer { name: "interp" type: "Interp" bottom: "s" top: "i" interp_param { zoom_factor: 2 pad_end: -1 } }
layer { name: "pool" type: "Pooling" bottom: "i" top: "p" top: "m"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "unpool" type: "Upsample" bottom: "p" bottom: "m" top: "u"
        upsample_param { scale: 2 pad_out_h: true pad_out_w: true } }
layer { name: "up" type: "Upsample" bottom: "u" top: "up" upsample_param { scale: 2 } }
layer { name: "reorg" type: "Reorg" bottom: "up" top: "r" reorg_param { stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "r" top: "fc" inner_product_param { num_output: 5 } }
"""


def test_a_net_through_the_fork_layers_is_shaped_to_the_inner_product(tmp_path: Path) -> None:
    path = tmp_path / "forks.prototxt"
    path.write_text(PROTOTXT)
    net = caffeport.read(prototxt=path)
    assert not net.warnings
    # conv 8x8 -> interp: eff 7, 7 + 6 = 13 -> pool ceil((13-2)/2)+1 = 7 -> unpool 7*2-1 = 13 -> up 26
    # -> reorg (16, 13, 13)
    assert net.layer("interp").top_shapes == [(1, 4, 13, 13)]
    assert net.layer("unpool").top_shapes == [(1, 4, 13, 13)]
    assert net.layer("up").top_shapes == [(1, 4, 26, 26)]
    assert net.layer("reorg").top_shapes == [(1, 16, 13, 13)]
    fc = net.layer("fc")
    assert fc.bottom_shapes is not None and fc.bottom_shapes == [(1, 16, 13, 13)]
    assert fc.top_shapes == [(1, 5)]


def test_the_fork_layers_run_in_a_chain() -> None:
    x = rand(1, 4, 4, 4, seed=9)
    layers = [
        make("ShuffleChannel", ["x"], ["s"], "shuffle", shuffle_channel_param={"group": 2}),
        make("Interp", ["s"], ["i"], "interp", interp_param={"zoom_factor": 2}),
        make("Upsample", ["i"], ["u"], "up", upsample_param={"scale": 2}),
        make("Reorg", ["u"], ["r"], "reorg", reorg_param={"stride": 2}),
    ]
    net = infer_shapes(Net(name="chain", layers=layers, inputs={"x": x.shape}), strict=True)
    out = caffeport.run(net, {"x": x}, all_layers=True)
    expected = reorg_reference(nearest_reference(interp_reference(shuffle_reference(x, 2), 7, 7), 2), 2, False)
    np.testing.assert_array_equal(out["r"], expected)
    assert out["r"].shape == net.layer("reorg").top_shapes[0] == (1, 16, 7, 7)
