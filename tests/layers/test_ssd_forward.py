"""Forwards of the SSD fork's Normalize, PriorBox and DetectionOutput against naive references and OpenCV.

Expected values come from hand computation, deliberately naive loops written
here from the fork's source (``normalize_layer.cpp``, ``prior_box_layer.cpp``,
``detection_output_layer.cpp``, ``bbox_util.cpp``), and OpenCV 4's Caffe
importer on the real yunet face detector (SSD-Caffe trained).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError
from caffeport.ir import Layer, Net
from caffeport.layers import layer_type
from caffeport.layers.blobs import layer_blob_problem
from tests.conftest import models_dir

cv2 = pytest.importorskip("cv2")


def make(type_: str, bottoms: list[str], tops: list[str], name: str = "L", **params: Any) -> Layer:
    return Layer(name=name, type=type_, bottoms=bottoms, tops=tops, params=params)


def forward(layer: Layer, *bottoms: np.ndarray) -> np.ndarray:
    frozen = [np.asarray(b, dtype=np.float32) for b in bottoms]
    copies = [b.copy() for b in frozen]
    tops = layer_type(layer.type).forward(layer, frozen)
    for before, after in zip(copies, frozen, strict=True):
        np.testing.assert_array_equal(before, after)  # bottoms are never modified
    assert len(tops) == 1 and tops[0].dtype == np.float32
    return tops[0]


# ---------------------------------------------------------------------------------------------------- Normalize


def naive_normalize(x: np.ndarray, scale: np.ndarray, across: bool, eps: float) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float64)
    n, c, h, w = x.shape
    for i in range(n):
        if across:
            norm = math.sqrt(sum(float(v) ** 2 for v in x[i].reshape(-1)) + eps)
            for k in range(c):
                out[i, k] = x[i, k] / norm * (scale[0] if scale.size == 1 else scale[k])
        else:
            for y in range(h):
                for z in range(w):
                    norm = math.sqrt(sum(float(x[i, k, y, z]) ** 2 for k in range(c)) + eps)
                    for k in range(c):
                        out[i, k, y, z] = x[i, k, y, z] / norm * (scale[0] if scale.size == 1 else scale[k])
    return out


@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_normalize_matches_naive_loops(across: bool, shared: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    scale = np.array([2.5], np.float32) if shared else np.array([1.0, 2.0, 20.0], np.float32)
    layer = make("Normalize", ["x"], ["y"], norm_param={"across_spatial": across, "channel_shared": shared})
    layer.blobs = [scale.reshape(()) if shared else scale]
    got = forward(layer, x)
    np.testing.assert_allclose(got, naive_normalize(x, scale, across, 1e-10), rtol=1e-5, atol=1e-6)


def test_normalize_defaults_are_across_spatial_and_shared() -> None:
    x = np.array([[[[3.0]], [[4.0]]], [[[0.0]], [[1.0]]]], np.float32)  # (2, 2, 1, 1)
    layer = make("Normalize", ["x"], ["y"])
    layer.blobs = [np.array(10.0, np.float32)]
    got = forward(layer, x)
    np.testing.assert_allclose(got.reshape(2, 2), [[6.0, 8.0], [0.0, 10.0]], rtol=1e-6)


def test_normalize_eps_is_inside_the_square_root() -> None:
    # one position, channels (3, 4): sum of squares 25; with eps = 11 the norm is sqrt(36) = 6 (not 5 + 11)
    x = np.array([3.0, 4.0], np.float32).reshape(1, 2, 1, 1)
    for across in (True, False):
        layer = make("Normalize", ["x"], ["y"], norm_param={"across_spatial": across, "eps": 11.0})
        layer.blobs = [np.array(1.0, np.float32)]
        np.testing.assert_allclose(forward(layer, x).reshape(-1), [0.5, 4 / 6], rtol=1e-6)
    # all zeros: eps keeps the norm positive, the output is 0, not NaN
    layer = make("Normalize", ["x"], ["y"], norm_param={"across_spatial": False})
    layer.blobs = [np.array(1.0, np.float32)]
    np.testing.assert_array_equal(forward(layer, np.zeros((1, 3, 2, 2), np.float32)), 0.0)


def test_normalize_shared_scale_blob_is_zero_dimensional() -> None:
    """The fork creates the shared scale with ``vector<int>(0)``: a 0-D blob (a legacy 1x1x1x1 one also fits)."""
    layer = make("Normalize", ["x"], ["y"])
    layer.bottom_shapes = [(1, 3, 2, 2)]
    for blob, ok in ((np.ones((), np.float32), True), (np.ones((1, 1, 1, 1), np.float32), True),
                     (np.ones((3,), np.float32), False)):
        layer.blobs = [blob]
        assert (layer_blob_problem(layer) is None) is ok, blob.shape


# ---------------------------------------------------------------------------------------------------- PriorBox


def test_prior_box_hand_computed_2x2() -> None:
    """A 2x2 map on a 20x20 image: step 10, centres 5 and 15; min 4, max 9, aspect ratio 2 with flip.

    Per cell, in the fork's order: the 4x4 square, the sqrt(4*9) = 6 square, then 2 (w 4*sqrt2, h 4/sqrt2) and
    1/2 (w 4/sqrt2, h 4*sqrt2).
    """
    layer = make("PriorBox", ["f", "data"], ["p"],
                 prior_box_param={"min_size": [4.0], "max_size": [9.0], "aspect_ratio": [2.0], "flip": True,
                                  "variance": [0.1, 0.1, 0.2, 0.2]})
    got = forward(layer, np.zeros((1, 8, 2, 2), np.float32), np.zeros((1, 3, 20, 20), np.float32))
    assert got.shape == (1, 2, 2 * 2 * 4 * 4)
    r = math.sqrt(2.0)
    sizes = [(4, 4), (6, 6), (4 * r, 4 / r), (4 / r, 4 * r)]
    expected = []
    for cy in (5, 15):
        for cx in (5, 15):
            for bw, bh in sizes:
                expected += [(cx - bw / 2) / 20, (cy - bh / 2) / 20, (cx + bw / 2) / 20, (cy + bh / 2) / 20]
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[0, 0, :8], [0.15, 0.15, 0.35, 0.35, 0.1, 0.1, 0.4, 0.4], rtol=1e-6)
    np.testing.assert_allclose(got[0, 1], [0.1, 0.1, 0.2, 0.2] * 16, rtol=1e-7)


def test_prior_box_order_with_two_min_sizes_clip_and_one_variance() -> None:
    """Per min_size in turn: its square, its sqrt(min*max) square, its aspect-ratio boxes; clip clamps to [0, 1]."""
    layer = make("PriorBox", ["f", "data"], ["p"],
                 prior_box_param={"min_size": [2.0, 8.0], "max_size": [8.0, 18.0], "aspect_ratio": [4.0],
                                  "flip": False, "clip": True, "variance": [0.3]})
    got = forward(layer, np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 3, 10, 10), np.float32))
    # one cell centred at (5, 5) on a 10x10 image; boxes 2x2, 4x4, (4 x 1), 8x8, 12x12 (clipped), (16 x 4)
    expected = [[4, 4, 6, 6], [3, 3, 7, 7], [3, 4.5, 7, 5.5], [1, 1, 9, 9], [0, 0, 10, 10], [0, 3, 10, 7]]
    np.testing.assert_allclose(got[0, 0].reshape(-1, 4), np.array(expected) / 10, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[0, 1], 0.3, rtol=1e-7)


def test_prior_box_explicit_sizes_steps_offset_default_variance() -> None:
    """img_h/img_w and step_h/step_w override the bottoms; offset 0; the default variance is 0.1 everywhere."""
    layer = make("PriorBox", ["f"], ["p"],
                 prior_box_param={"min_size": [10.0], "img_h": 100, "img_w": 200, "step_h": 30.0, "step_w": 40.0,
                                  "offset": 0.0})
    got = forward(layer, np.zeros((1, 1, 2, 3), np.float32))
    expected = []
    for h in range(2):
        for w in range(3):
            cx, cy = w * 40.0, h * 30.0
            expected += [(cx - 5) / 200, (cy - 5) / 100, (cx + 5) / 200, (cy + 5) / 100]
    np.testing.assert_allclose(got[0, 0], expected, rtol=1e-6, atol=1e-7)
    assert got[0, 0, 0] < 0  # not clipped by default
    np.testing.assert_allclose(got[0, 1], 0.1, rtol=1e-7)
    # img_size and step: one value for both axes
    square = make("PriorBox", ["f"], ["p"], prior_box_param={"min_size": [10.0], "img_size": 50, "step": 25.0})
    got = forward(square, np.zeros((1, 1, 2, 2), np.float32))
    np.testing.assert_allclose(got[0, 0, :4], [7.5 / 50, 7.5 / 50, 17.5 / 50, 17.5 / 50], rtol=1e-6)


def test_prior_box_truncates_sizes_to_int() -> None:
    """Caffe's forward reads each min_size/max_size into an ``int``: 4.9 acts as 4, max 9.9 as 9 (sqrt(36) = 6).

    OpenCV keeps the fractional sizes; Caffe's source decides.
    """
    layer = make("PriorBox", ["f", "data"], ["p"], prior_box_param={"min_size": [4.9], "max_size": [9.9]})
    got = forward(layer, np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1, 10, 10), np.float32))
    np.testing.assert_allclose(got[0, 0], [0.3, 0.3, 0.7, 0.7, 0.2, 0.2, 0.8, 0.8], rtol=1e-6)


def test_prior_box_duplicate_ratios_are_skipped() -> None:
    layer = make("PriorBox", ["f", "data"], ["p"],
                 prior_box_param={"min_size": [4.0], "aspect_ratio": [2.0, 0.5, 1.0, 2.0], "flip": True})
    got = forward(layer, np.zeros((1, 1, 1, 1), np.float32), np.zeros((1, 1, 8, 8), np.float32))
    assert got.shape == (1, 2, 3 * 4)  # ratios 1, 2, 1/2


def test_prior_box_bad_params_are_refused() -> None:
    f = np.zeros((1, 1, 2, 2), np.float32)
    for params in ({"min_size": [4.0], "img_size": 8, "img_h": 8, "img_w": 8},
                   {"min_size": [4.0], "img_h": 8},
                   {"min_size": [4.0], "img_size": 8, "step": 2.0, "step_h": 2.0, "step_w": 2.0},
                   {"min_size": [4.0], "img_size": 8, "variance": [0.1, 0.2]}):
        with pytest.raises(CaffeportError):
            forward(make("PriorBox", ["f"], ["p"], prior_box_param=params), f)


# ---------------------------------------------------------------------------------------------------- DetectionOutput


def priors_blob(boxes: list[list[float]], variance: list[float] | None = None) -> np.ndarray:
    var = variance or [0.1, 0.1, 0.2, 0.2]
    return np.array([np.ravel(boxes), np.ravel([var] * len(boxes))], np.float32)[None]


def detection(**params: Any) -> Layer:
    base: dict[str, Any] = {"num_classes": 2, "code_type": "CENTER_SIZE"}
    return make("DetectionOutput", ["loc", "conf", "prior"], ["det"], detection_output_param={**base, **params})


def rows(top: np.ndarray) -> np.ndarray:
    assert top.ndim == 4 and top.shape[:2] == (1, 1) and top.shape[3] == 7
    return top[0, 0]


def test_detection_decode_center_size_by_hand() -> None:
    prior = priors_blob([[0.2, 0.2, 0.4, 0.6]])
    loc = np.array([[1.0, -2.0, math.log(2.0) / 0.2, 0.0]], np.float32)  # dx, dy (in variances), log w, log h
    conf = np.array([[0.1, 0.9]], np.float32)
    got = rows(forward(detection(), loc, conf, prior))
    # prior centre (0.3, 0.4), size (0.2, 0.4); centre += (0.1 * 1 * 0.2, 0.1 * -2 * 0.4); width doubles
    np.testing.assert_allclose(got, [[0, 1, 0.9, 0.32 - 0.2, 0.32 - 0.2, 0.32 + 0.2, 0.32 + 0.2]], rtol=1e-5)


def test_detection_decode_corner_and_corner_size_and_variance_in_target() -> None:
    prior = priors_blob([[0.2, 0.2, 0.4, 0.6]])
    loc = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    conf = np.array([[0.0, 1.0]], np.float32)
    corner = rows(forward(detection(code_type="CORNER"), loc, conf, prior))[0, 3:]
    np.testing.assert_allclose(corner, [0.2 + 0.1, 0.2 + 0.2, 0.4 + 0.6, 0.6 + 0.8], rtol=1e-6)
    # CORNER is the proto default
    default = make("DetectionOutput", ["loc", "conf", "prior"], ["det"], detection_output_param={"num_classes": 2})
    np.testing.assert_allclose(rows(forward(default, loc, conf, prior))[0, 3:], corner, rtol=1e-7)
    corner_size = rows(forward(detection(code_type="CORNER_SIZE"), loc, conf, prior))[0, 3:]
    np.testing.assert_allclose(corner_size, [0.2 + 0.1 * 0.2, 0.2 + 0.2 * 0.4, 0.4 + 0.6 * 0.2, 0.6 + 0.8 * 0.4],
                               rtol=1e-6)
    in_target = rows(forward(detection(code_type="CORNER", variance_encoded_in_target=True), loc, conf, prior))
    np.testing.assert_allclose(in_target[0, 3:], [1.2, 2.2, 3.4, 4.6], rtol=1e-6)
    numbered = rows(forward(detection(code_type=3), loc, conf, prior))[0, 3:]  # enum numbers are tolerated
    np.testing.assert_allclose(numbered, corner_size, rtol=1e-7)


def test_detection_decoded_boxes_are_not_clipped() -> None:
    prior = priors_blob([[0.0, 0.0, 0.1, 0.1]])
    loc = np.array([[-10.0, -10.0, 5.0, 5.0]], np.float32)
    got = rows(forward(detection(), loc, np.array([[0.0, 1.0]], np.float32), prior))
    assert got[0, 3] < 0 and got[0, 4] < 0


SQUARES = [[0.0, 0.0, 0.5, 0.5], [0.1, 0.0, 0.6, 0.5], [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]


def test_detection_nms_threshold_ties_and_confidence_threshold() -> None:
    # boxes 0 and 2 are identical with equal scores: the stable sort keeps prior 0 first, so 2 is suppressed;
    # box 1 overlaps box 0 by 0.4 * 0.5 / (0.25 + 0.25 - 0.2) = 2/3
    prior = priors_blob(SQUARES)
    loc = np.zeros((1, 16), np.float32)
    conf = np.array([[0.2, 0.8, 0.3, 0.7, 0.2, 0.8, 0.5, 0.5]], np.float32)
    nms = {"nms_threshold": 0.5}
    got = rows(forward(detection(nms_param=nms, confidence_threshold=0.5), loc, conf, prior))
    # prior 3's score 0.5 is not strictly above the threshold
    np.testing.assert_allclose(got, [[0, 1, 0.8, *SQUARES[0]]], rtol=1e-6)
    got = rows(forward(detection(nms_param={"nms_threshold": 0.7}, confidence_threshold=0.4), loc, conf, prior))
    np.testing.assert_allclose(got, [[0, 1, 0.8, *SQUARES[0]], [0, 1, 0.7, *SQUARES[1]], [0, 1, 0.5, *SQUARES[3]]],
                               rtol=1e-6)
    # an overlap equal to the threshold is kept (overlap <= threshold); identical boxes overlap exactly 1
    got = rows(forward(detection(nms_param={"nms_threshold": 1.0}), loc, conf, prior))
    assert got[:, 2].tolist() == pytest.approx([0.8, 0.8, 0.7, 0.5])


@pytest.mark.parametrize("first", [0, 1])
def test_detection_equal_scores_keep_the_lower_prior_index(first: int) -> None:
    """``GetMaxScoreIndex`` uses ``std::stable_sort``: among equal scores the lower prior index comes first."""
    pair = [SQUARES[first], SQUARES[1 - first]]  # overlap 2/3
    conf = np.array([[0.4, 0.6, 0.4, 0.6]], np.float32)
    got = rows(forward(detection(nms_param={"nms_threshold": 0.5}), np.zeros((1, 8), np.float32), conf,
                       priors_blob(pair)))
    np.testing.assert_allclose(got, [[0, 1, 0.6, *pair[0]]], rtol=1e-6)


def test_detection_top_k_keep_top_k_and_background() -> None:
    prior = priors_blob([[0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.3, 0.3], [0.4, 0.4, 0.5, 0.5], [0.6, 0.6, 0.7, 0.7]])
    loc = np.zeros((1, 16), np.float32)
    # 3 classes; class 0 (background) has the highest scores and never appears
    conf = np.array([[0.9, 0.6, 0.1], [0.9, 0.2, 0.5], [0.9, 0.4, 0.3], [0.9, 0.35, 0.45]], np.float32).reshape(1, -1)
    layer = detection(num_classes=3)
    got = rows(forward(layer, loc, conf, prior))
    # by label, then score descending within the label
    assert got[:, 1].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    assert got[:, 2].tolist() == pytest.approx([0.6, 0.4, 0.35, 0.2, 0.5, 0.45, 0.3, 0.1])
    got = rows(forward(detection(num_classes=3, nms_param={"top_k": 2}), loc, conf, prior))
    assert got[:, 2].tolist() == pytest.approx([0.6, 0.4, 0.5, 0.45])
    # keep_top_k over all classes by score, the rows still grouped by label
    got = rows(forward(detection(num_classes=3, keep_top_k=3), loc, conf, prior))
    assert got[:, 1].tolist() == [1, 2, 2]
    assert got[:, 2].tolist() == pytest.approx([0.6, 0.5, 0.45])
    # no background class: label 0 competes too (Caffe's CPU path aborts on this with share_location, its GPU
    # path and OpenCV run it; so does caffeport)
    got = rows(forward(detection(num_classes=3, background_label_id=-1, keep_top_k=4), loc, conf, prior))
    assert got[:, 1].tolist() == [0, 0, 0, 0]


def test_detection_share_location_false() -> None:
    prior = priors_blob([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]])
    # per prior: loc of class 0 (background, unused), class 1, class 2 (CORNER offsets, variance 0.1/0.2)
    loc = np.array([[0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1],
                    [0, 0, 0, 0, 0, 0, 0, 0, -1, -1, 0, 0]], np.float32).reshape(1, -1)
    conf = np.array([[0.0, 0.9, 0.8], [0.0, 0.1, 0.7]], np.float32).reshape(1, -1)
    layer = detection(num_classes=3, share_location=False, code_type="CORNER")
    got = rows(forward(layer, loc, conf, prior))
    np.testing.assert_allclose(got, [
        [0, 1, 0.9, 0.2, 0.2, 0.3, 0.3],
        [0, 1, 0.1, 0.5, 0.5, 0.9, 0.9],
        [0, 2, 0.8, 0.1, 0.1, 0.5, 0.5],
        [0, 2, 0.7, 0.4, 0.4, 0.9, 0.9],
    ], rtol=1e-6, atol=1e-7)


def test_detection_no_detection_rows_and_batches() -> None:
    prior = priors_blob(SQUARES[:2])
    loc = np.zeros((2, 8), np.float32)
    conf = np.array([[0.9, 0.1, 0.9, 0.1], [0.9, 0.1, 0.2, 0.8]], np.float32)
    layer = detection(confidence_threshold=0.95)
    got = forward(layer, loc, conf, prior)
    # no detection in any image: one row per image, all -1 except the image id
    np.testing.assert_array_equal(got, [[[[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]]]])
    got = rows(forward(detection(confidence_threshold=0.5), loc, conf, prior))
    np.testing.assert_allclose(got, [[1, 1, 0.8, *SQUARES[1]]], rtol=1e-6)  # image 0 has none, image 1 one
    got = rows(forward(detection(), loc, conf, prior))
    assert got[:, 0].tolist() == [0, 1]  # NMS at 0.3 leaves one box per image


def naive_detection(loc: np.ndarray, conf: np.ndarray, prior: np.ndarray, num_classes: int, thr: float,
                    conf_thr: float, eta: float, top_k: int, keep_top_k: int) -> list[list[float]]:
    """A direct transcription of the fork's CPU path for CENTER_SIZE, share_location, background 0."""
    num_priors = prior.shape[2] // 4
    out: list[list[float]] = []
    for i in range(loc.shape[0]):
        boxes = []
        for p in range(num_priors):
            x0, y0, x1, y1 = prior[0, 0, 4 * p: 4 * p + 4]
            v = prior[0, 1, 4 * p: 4 * p + 4]
            lx, ly, lw, lh = loc[i, 4 * p: 4 * p + 4]
            pw, ph = x1 - x0, y1 - y0
            cx, cy = v[0] * lx * pw + (x0 + x1) / 2, v[1] * ly * ph + (y0 + y1) / 2
            w, h = math.exp(v[2] * lw) * pw, math.exp(v[3] * lh) * ph
            boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))

        def size(b: tuple[float, ...]) -> float:
            return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])

        def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
            if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
                return 0.0
            iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
            if iw <= 0 or ih <= 0:
                return 0.0
            return iw * ih / (size(a) + size(b) - iw * ih)

        picked: dict[int, list[int]] = {}
        for c in range(1, num_classes):
            scores = [float(conf[i, p * num_classes + c]) for p in range(num_priors)]
            order = sorted((p for p in range(num_priors) if scores[p] > conf_thr), key=lambda p: -scores[p])
            if -1 < top_k < len(order):
                order = order[:top_k]
            kept: list[int] = []
            adaptive = thr
            for p in order:
                keep = all(iou(boxes[p], boxes[k]) <= adaptive for k in kept)
                if keep:
                    kept.append(p)
                    if eta < 1 and adaptive > 0.5:
                        adaptive *= eta
            picked[c] = kept
        dets = [(float(conf[i, p * num_classes + c]), c, p) for c in sorted(picked) for p in picked[c]]
        if -1 < keep_top_k < len(dets):
            dets = sorted(dets, key=lambda d: -d[0])[:keep_top_k]
            regrouped: dict[int, list[int]] = {}
            for _, c, p in dets:
                regrouped.setdefault(c, []).append(p)
            dets = [(float(conf[i, p * num_classes + c]), c, p) for c in sorted(regrouped) for p in regrouped[c]]
        out += [[i, c, s, *boxes[p]] for s, c, p in dets]
    return out


@pytest.mark.parametrize("eta", [1.0, 0.8])
@pytest.mark.parametrize("seed", range(4))
def test_detection_matches_naive_transcription_on_random_clusters(eta: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    num, num_priors, num_classes = 2, 60, 3
    centres = rng.uniform(0.2, 0.8, size=(num_priors, 2))
    half = rng.uniform(0.05, 0.2, size=(num_priors, 2))
    prior = priors_blob(np.concatenate([centres - half, centres + half], axis=1).tolist())
    loc = rng.normal(scale=0.5, size=(num, num_priors * 4)).astype(np.float32)
    logits = rng.normal(size=(num, num_priors, num_classes))
    conf = (np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)).astype(np.float32).reshape(num, -1)
    params = {"num_classes": num_classes, "nms_thr": 0.6, "conf": 0.2, "top_k": 40, "keep_top_k": 25}
    layer = detection(num_classes=num_classes, confidence_threshold=params["conf"], keep_top_k=params["keep_top_k"],
                      nms_param={"nms_threshold": params["nms_thr"], "top_k": params["top_k"], "eta": eta})
    got = rows(forward(layer, loc, conf, prior))
    expected = naive_detection(loc, conf, prior, num_classes, float(np.float32(0.6)), float(np.float32(0.2)),
                               float(np.float32(eta)), 40, 25)
    assert len(expected) > 10
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_detection_adaptive_eta_changes_the_result() -> None:
    # box 1 overlaps box 0 by 0.3 / (0.5 + 0.3 - 0.3) = 0.6, box 2 touches neither; at threshold 0.7 all are kept
    # with eta 1; with eta 0.8 the threshold drops to 0.56 once box 0 is kept, so box 1 is suppressed
    prior = priors_blob([[0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 0.3], [0.0, 0.7, 1.0, 1.0]])
    loc = np.zeros((1, 12), np.float32)
    conf = np.array([[0.1, 0.9, 0.2, 0.8, 0.3, 0.7]], np.float32)
    got = rows(forward(detection(nms_param={"nms_threshold": 0.7}), loc, conf, prior))
    assert got[:, 2].tolist() == pytest.approx([0.9, 0.8, 0.7])
    got = rows(forward(detection(nms_param={"nms_threshold": 0.7, "eta": 0.8}), loc, conf, prior))
    assert got[:, 2].tolist() == pytest.approx([0.9, 0.7])


def test_detection_unsupported_and_bad_inputs() -> None:
    kind = layer_type("DetectionOutput")
    assert kind.unsupported(detection()) is None
    assert "code_type" in (kind.unsupported(detection(code_type="POLAR")) or "")
    prior = priors_blob(SQUARES[:2])
    with pytest.raises(CaffeportError, match="expected"):  # conf of the wrong size for 2 priors x 2 classes
        forward(detection(), np.zeros((1, 8), np.float32), np.zeros((1, 6), np.float32), prior)
    with pytest.raises(CaffeportError, match="num_classes"):
        forward(make("DetectionOutput", ["l", "c", "p"], ["d"]), np.zeros((1, 8), np.float32),
                np.zeros((1, 4), np.float32), prior)


# ---------------------------------------------------------------------------------------------------- yunet vs OpenCV


YUNET = "yunet-libfacedetection/yufacedetectnet-open-v1"


def yunet() -> tuple[Net, Any, np.ndarray]:
    """The net, OpenCV's net with the image set, and the image: astronaut.png as raw BGR 0-255, 320x240, NCHW.

    libfacedetection's OpenCV example feeds ``blobFromImage(img, size=...)``: no mean, no scaling. (The
    ``transform_param`` mean values in the deploy prototxt's DetectionOutput are only for its ``visualize``.)
    """
    root = models_dir()
    prototxt, caffemodel = str(root / f"{YUNET}.prototxt"), str(root / f"{YUNET}.caffemodel")
    net = caffeport.read(caffemodel, prototxt)
    image = cv2.imread(str(root.parent / "images" / "astronaut.png"))
    assert image is not None
    x = np.ascontiguousarray(cv2.resize(image, (320, 240)).transpose(2, 0, 1)[None], dtype=np.float32)
    reference = cv2.dnn.readNetFromCaffe(prototxt, caffemodel)
    reference.enableFusion(False)
    reference.setInput(x)
    return net, reference, x


def opencv_rows(top: np.ndarray) -> np.ndarray:
    """OpenCV pads its DetectionOutput top with all-zero rows up to keep_top_k; Caffe writes only the kept rows."""
    found = top.reshape(-1, 7)
    return found[np.any(found != 0, axis=1)]


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: {got.shape} vs {want.shape}"
    scale = float(np.max(np.abs(want))) or 1.0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def test_yunet_ssd_layers_on_opencv_bottoms() -> None:
    """Normalize, PriorBox and DetectionOutput alone: fed OpenCV's bottoms, compared with OpenCV's tops."""
    net, reference, x = yunet()
    ours = [la for la in net.layers if la.type in ("Normalize", "PriorBox", "DetectionOutput")]
    assert [la.type for la in ours].count("DetectionOutput") == 1
    producer = {top: la.name for la in net.layers for top in la.tops}
    wanted = sorted({producer[b] for la in ours for b in [*la.bottoms, *la.tops] if b in producer})
    blobs = {"data": x}
    for name, value in zip(wanted, reference.forward(wanted), strict=True):
        blobs[next(la for la in net.layers if la.name == name).tops[0]] = value
    for la in ours:
        got = forward(la, *(blobs[b] for b in la.bottoms))
        want = blobs[la.tops[0]]
        if la.type == "DetectionOutput":
            got, want = rows(got), opencv_rows(want)
            assert len(got) > 5 and got[0, 2] > 0.9  # the astronaut's face, and low-score candidates
        assert_close(got, want, la.name)


def test_yunet_end_to_end_against_opencv() -> None:
    """Every layer's top of caffeport.run against OpenCV's, then the detection rows."""
    net, reference, x = yunet()
    outputs = caffeport.run(net, {"data": x}, all_layers=True)
    names = [la.name for la in net.layers if la.tops and la.bottoms]
    for layer_name, want in zip(names, reference.forward(names), strict=True):
        la = next(la for la in net.layers if la.name == layer_name)
        got = outputs[f"{layer_name}/{la.tops[0]}"]
        if la.type == "DetectionOutput":
            got, want = rows(got), opencv_rows(want)
            assert len(got) > 5 and got[0, 2] > 0.9
        assert_close(got, want, f"{layer_name} ({la.type})")
