"""SSD in ONNX: PriorBox folded to constants, DetectionOutput in standard ops, ``--ssd-heads``.

Expected values are caffeport.run's (the reference, whose PriorBox and
DetectionOutput follow the SSD fork's Caffe rules): the detection rows must
agree exactly in count, image ids and labels, and to 1e-4 in scores and
boxes, and every other tensor as `check_against_reference` checks them. The
rows are compared in order (not as sets): the lowering makes ONNX's NMS walk
candidates in Caffe's stable order, so equal scores, which the hand-made nets
below have on purpose, must come out as the reference has them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest

import caffeport
from caffeport.errors import CaffeportError, UnsupportedModelError
from caffeport.ir import Layer
from caffeport.onnx import to_onnx
from caffeport.onnx.export import SSD_HEADS_KEY
from tests.conftest import models_dir
from tests.onnx.onnx_helpers import check_against_reference, ort_all, tensor_map, tiny_net

ROOT = Path(__file__).resolve().parents[2]
IMAGES = models_dir().parent / "images"


def yunet_files() -> tuple[Path, Path]:
    folder = models_dir() / "yunet-libfacedetection"
    return folder / "yufacedetectnet-open-v1.caffemodel", folder / "yufacedetectnet-open-v1.prototxt"


def astronaut() -> np.ndarray:
    """The shared photo as yunet's input: raw BGR 0..255, cv2.resize'd to 320x240, NCHW."""
    image = cv2.imread(str(IMAGES / "astronaut.png"))
    assert image is not None, f"cannot read {IMAGES / 'astronaut.png'}"
    return cv2.resize(image, (320, 240)).astype(np.float32).transpose(2, 0, 1)[None].copy()


def assert_rows_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Detection rows: the same count, image ids and labels exactly, scores and boxes to 1e-4 (absolute: they
    are in [0, 1] units)."""
    assert got.shape == want.shape, f"{got.shape} rows, the reference has {want.shape}"
    assert np.array_equal(got[..., :2], want[..., :2]), "image ids or labels differ"
    np.testing.assert_allclose(got[..., 2:], want[..., 2:], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- yunet, the real SSD model


def test_yunet_detections_match_the_reference_on_a_photo() -> None:
    net = caffeport.read(*yunet_files())
    x = astronaut()
    model = to_onnx(net)
    want = check_against_reference(net, model, {"data": x})  # every tensor, the rows included
    got = ort_all(model, {"data": x})[tensor_map(model)["detection_out/detection_out"]]
    rows = want["detection_out"]
    assert rows.shape[:2] == (1, 1) and rows.shape[2] > 10  # a real result: the face and the weaker candidates
    assert rows[0, 0, 0, 2] > 0.99 and np.all(rows[0, 0, :, 1] == 1)
    assert_rows_equal(got, rows)
    # the priors are folded: no PriorBox node, the four priors and their Concat are initializers
    pairs = tensor_map(model)
    inits = {i.name for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    for key in ("conv3_3_norm_mbox_priorbox/conv3_3_norm_mbox_priorbox", "mbox_priorbox/mbox_priorbox"):
        node = producers[pairs[key]]
        assert node.op_type == "Identity" and node.input[0] in inits
    assert {n.op_type for n in model.graph.node} >= {"NonMaxSuppression", "TopK", "Gather"}


@pytest.mark.parametrize("opset", [13, 21])
def test_yunet_at_the_oldest_and_newest_opsets(opset: int) -> None:
    net = caffeport.read(*yunet_files())
    model = to_onnx(net, opset=opset)
    assert model.opset_import[0].version == opset
    check_against_reference(net, model, {"data": astronaut()})


@pytest.mark.parametrize("seed", [0, 1])
def test_yunet_on_random_inputs(seed: int) -> None:
    """Random images give many weak, overlapping candidates: NMS and keep_top_k (50) both cut."""
    net = caffeport.read(*yunet_files())
    x = np.random.default_rng(seed).uniform(0, 255, (1, 3, 240, 320)).astype(np.float32)
    want = check_against_reference(net, to_onnx(net), {"data": x})
    assert want["detection_out"].shape[2] > 0


def test_convert_and_verify_from_the_command_line(tmp_path: Path) -> None:
    model, proto = yunet_files()
    out = tmp_path / "yunet.onnx"
    converted = subprocess.run([sys.executable, "-m", "caffeport", "convert", model, "-p", proto, "-f", "onnx",
                                "-o", out], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert converted.returncode == 0, converted.stderr
    x = tmp_path / "x.npy"
    np.save(x, astronaut())
    verified = subprocess.run([sys.executable, "-m", "caffeport", "verify", model, "-p", proto, out, "--input",
                               f"data={x}", "--all-layers"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "detection_out (output)" in verified.stdout and "FAIL" not in verified.stdout


# ----------------------------------------------------------------------------- --ssd-heads


def test_ssd_heads_outputs_the_detection_inputs(tmp_path: Path) -> None:
    model_path, proto = yunet_files()
    out = tmp_path / "heads.onnx"
    result = subprocess.run([sys.executable, "-m", "caffeport", "convert", model_path, "-p", proto, "-f", "onnx",
                             "--ssd-heads", "-o", out], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(out))
    net = caffeport.read(model_path, proto)
    assert [o.name for o in model.graph.output] == ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    assert "NonMaxSuppression" not in {n.op_type for n in model.graph.node}
    assert "detection_out/detection_out" not in tensor_map(model)
    x = astronaut()
    want = caffeport.run(net, {"data": x}, all_layers=True)
    got = ort_all(model, {"data": x})
    for name in ("mbox_loc", "mbox_conf_flatten", "mbox_priorbox"):
        assert got[name].shape == want[f"{name}/{name}"].shape
        np.testing.assert_allclose(got[name], want[f"{name}/{name}"], rtol=0,
                                   atol=1e-4 * float(np.max(np.abs(want[f"{name}/{name}"]))))
    np.testing.assert_array_equal(got["mbox_priorbox"], want["mbox_priorbox/mbox_priorbox"])  # folded: bit-exact
    heads = json.loads({p.key: p.value for p in model.metadata_props}[SSD_HEADS_KEY])
    assert heads["detection_out"]["loc"] == "mbox_loc" and heads["detection_out"]["priors"] == "mbox_priorbox"
    assert heads["detection_out"]["detection_output_param"]["keep_top_k"] == 50
    check_against_reference(net, model, {"data": x}, left_out={"detection_out/detection_out"})  # the others


def test_ssd_heads_needs_a_detection_output_and_onnx(tmp_path: Path) -> None:
    det1 = models_dir() / "mtcnn" / "det1.caffemodel", models_dir() / "mtcnn" / "det1.prototxt"
    with pytest.raises(UnsupportedModelError, match="the net has no DetectionOutput layer"):
        to_onnx(caffeport.read(*det1), ssd_heads=True)
    refused = subprocess.run([sys.executable, "-m", "caffeport", "convert", str(det1[0]), "-p", str(det1[1]),
                              "-f", "npz",
                              "--ssd-heads", "-o", str(tmp_path / "w.npz")], capture_output=True, text=True,
                             cwd=ROOT, timeout=600)
    assert refused.returncode == 1 and "--ssd-heads is for -f onnx, not -f npz" in refused.stderr
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- hand-made SSD heads


FMAP, IMAGE = (1, 1, 4, 5), (1, 3, 40, 50)
PRIORS = {"min_size": [8.0], "max_size": [16.0], "aspect_ratio": [2.0], "flip": True,
          "variance": [0.1, 0.1, 0.2, 0.2]}  # 4 priors per cell: 80 priors


def ssd_case(batch: int, classes: int, share: bool, params: dict[str, Any], seed: int, loc_scale: float = 1.0,
             priors: dict[str, Any] | None = None, tied: bool = True) -> tuple[list[Layer], dict[str, np.ndarray]]:
    """PriorBox over a 4x5 map of a 40x50 image, then DetectionOutput on given loc and conf.

    The scores are quantized to quarters, so that many candidates tie, and the loc predictions are small, so
    that the decoded boxes overlap a lot (NMS has work to do); ``tied=False``: uniform scores.
    """
    rng = np.random.default_rng(seed)
    num_priors = 4 * 5 * 4
    num_loc = 1 if share else classes
    inputs = {
        "fmap": np.zeros(FMAP, np.float32), "img": np.zeros(IMAGE, np.float32),
        "loc": (rng.standard_normal((batch, num_priors * num_loc * 4)) * loc_scale).astype(np.float32),
        "conf": (rng.integers(0, 5, (batch, num_priors * classes)) / 4 if tied
                 else rng.uniform(0, 1, (batch, num_priors * classes))).astype(np.float32),
    }
    layers = [
        Layer("pb", "PriorBox", ["fmap", "img"], ["priors"], {"prior_box_param": priors or PRIORS}),
        Layer("det", "DetectionOutput", ["loc", "conf", "priors"], ["rows"], {"detection_output_param": {
            "num_classes": classes, "share_location": share, **params}}),
    ]
    return layers, inputs


CASES = {
    "center_size_top_k_keep_top_k": (2, 3, True, {"code_type": "CENTER_SIZE", "nms_param": {
        "nms_threshold": 0.45, "top_k": 30}, "keep_top_k": 12, "confidence_threshold": 0.3}),
    "corner_per_class_locs": (1, 3, False, {"code_type": "CORNER", "background_label_id": 1,
                                            "nms_param": {"nms_threshold": 0.3}}),
    "corner_variance_in_target": (1, 2, True, {"code_type": "CORNER", "variance_encoded_in_target": True,
                                               "nms_param": {"nms_threshold": 0.5, "top_k": 40}}),
    "corner_size_no_background": (1, 2, True, {"code_type": "CORNER_SIZE", "background_label_id": -1,
                                               "nms_param": {"nms_threshold": 0.2}, "keep_top_k": 7,
                                               "confidence_threshold": 0.0}),
    "center_size_in_target_threshold_above_one": (2, 2, False, {
        "code_type": "CENTER_SIZE", "variance_encoded_in_target": True, "nms_param": {"nms_threshold": 1.5},
        "confidence_threshold": 0.5}),
    "keep_top_k_zero": (1, 2, True, {"code_type": "CENTER_SIZE", "keep_top_k": 0}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_detection_output_cases(name: str) -> None:
    batch, classes, share, params = CASES[name]
    layers, inputs = ssd_case(batch, classes, share, params, seed=len(name), loc_scale=0.3)
    net = tiny_net(layers, inputs)
    model = to_onnx(net)
    want = check_against_reference(net, model, inputs)
    rows = want["det/rows"]
    got = ort_all(model, inputs)[tensor_map(model)["det/rows"]]
    assert_rows_equal(got, rows)
    scores = inputs["conf"].reshape(batch, -1, classes)
    assert len(np.unique(scores)) < scores.size / 10  # the case has ties, which the ranks must order as Caffe
    assert rows.shape[2] > 0 and (rows[0, 0, 0, 1] != -1 or params.get("keep_top_k") == 0)


def test_keep_top_k_cut_keeps_the_rows_in_label_order() -> None:
    """The cut picks the best scores over all classes, but the rows stay by label, then NMS order."""
    layers, inputs = ssd_case(1, 4, True, {"code_type": "CENTER_SIZE", "nms_param": {"nms_threshold": 0.45},
                                           "keep_top_k": 10}, seed=4, loc_scale=0.3, tied=False)
    net = tiny_net(layers, inputs)
    model = to_onnx(net)
    rows = check_against_reference(net, model, inputs)["det/rows"][0, 0]
    assert rows.shape == (10, 7) and np.all(np.diff(rows[:, 1]) >= 0) and len(set(rows[:, 1])) > 1
    assert not np.all(np.diff(rows[:, 2]) <= 0)  # not in score order: a lowering that skipped the reorder fails
    assert_rows_equal(ort_all(model, inputs)[tensor_map(model)["det/rows"]], rows[None, None])


def test_candidates_tied_at_the_top_k_and_keep_top_k_cuts() -> None:
    """Every score equal: top_k keeps the lowest prior indices, keep_top_k the lowest labels, as the reference."""
    layers, inputs = ssd_case(1, 4, True, {"code_type": "CENTER_SIZE", "nms_param": {"nms_threshold": 0.99,
                                                                                      "top_k": 9},
                                           "keep_top_k": 20}, seed=3, loc_scale=0.0)
    inputs["conf"][:] = 0.5
    net = tiny_net(layers, inputs)
    want = check_against_reference(net, to_onnx(net), inputs)["det/rows"][0, 0]
    assert want.shape == (20, 7)  # 3 classes x 9 candidates, cut to 20: labels 1 and 2 whole, 2 of label 3
    assert list(want[:, 1]) == [1.0] * 9 + [2.0] * 9 + [3.0] * 2


def test_inverted_boxes_overlap_nothing() -> None:
    """CORNER decoding with large offsets gives boxes with xmax < xmin, which Caffe gives size 0 and overlap 0;
    ONNX's NMS would read them corner-swapped and suppress by them."""
    layers, inputs = ssd_case(1, 2, True, {"code_type": "CORNER", "nms_param": {"nms_threshold": 0.1}}, seed=5,
                              loc_scale=4.0)
    net = tiny_net(layers, inputs)
    want = check_against_reference(net, to_onnx(net), inputs)["det/rows"][0, 0]
    inverted = (want[:, 5] < want[:, 3]) | (want[:, 6] < want[:, 4])
    assert inverted.sum() > 5 and (~inverted).sum() > 5


def test_no_detection_gives_the_minus_one_rows() -> None:
    layers, inputs = ssd_case(3, 2, True, {"code_type": "CENTER_SIZE", "confidence_threshold": 0.99}, seed=1)
    inputs["conf"] *= 0.9  # every score below the threshold in every image
    net = tiny_net(layers, inputs)
    want = check_against_reference(net, to_onnx(net), inputs)["det/rows"]
    expected = np.full((1, 1, 3, 7), -1, np.float32)
    expected[0, 0, :, 0] = [0, 1, 2]
    np.testing.assert_array_equal(want, expected)


def test_only_one_image_detects() -> None:
    """Rows of the images that have any, and no -1 row for the one that has none (whose keep_top_k TopK has
    nothing to take)."""
    layers, inputs = ssd_case(2, 2, True, {"code_type": "CENTER_SIZE", "confidence_threshold": 0.6,
                                           "keep_top_k": 5}, seed=2)
    inputs["conf"][0] = 0.25
    net = tiny_net(layers, inputs)
    rows = check_against_reference(net, to_onnx(net), inputs)["det/rows"][0, 0]
    assert rows.shape[0] == 5 and np.all(rows[:, 0] == 1)


def test_refusals_name_the_layer() -> None:
    layers, inputs = ssd_case(1, 2, True, {"nms_param": {"eta": 0.9}}, seed=0)
    with pytest.raises(UnsupportedModelError, match=r"'det' \(DetectionOutput\): nms_param.eta 0.9 \(adaptive NMS"):
        to_onnx(tiny_net(layers, inputs))
    layers, inputs = ssd_case(1, 2, True, {}, seed=0)
    with pytest.raises(UnsupportedModelError, match="per-image NMS is unrolled over the prototxt's batch"):
        to_onnx(tiny_net(layers, inputs), dynamic_batch=True)
    # priors fed as an input, not computed by PriorBox: their values are not known at export
    fed = {**inputs, "priors": np.zeros((1, 2, 320), np.float32)}
    net = tiny_net([layers[1]], {k: v for k, v in fed.items() if k in ("loc", "conf", "priors")})
    with pytest.raises(UnsupportedModelError, match="bottom 'priors' must be a constant of the net"):
        to_onnx(net)


def test_ssd_heads_refuses_a_net_that_reads_the_detections() -> None:
    layers, inputs = ssd_case(1, 2, True, {}, seed=0)
    net = tiny_net(layers, inputs)
    net.layers.append(Layer("after", "Power", ["rows"], ["scaled"], {"power_param": {"scale": 2.0}}))
    with pytest.raises(UnsupportedModelError, match=r"layer\(s\) 'after' read the detections"):
        to_onnx(net, ssd_heads=True)


def test_non_positive_priors_are_refused_for_center_size(tmp_path: Path) -> None:
    """As the reference's forward refuses them (a prior of zero width cannot be decoded CENTER_SIZE)."""
    # cell centres offset past the image's right and bottom edges, clipped there: priors of width 0
    layers, inputs = ssd_case(1, 2, True, {"code_type": "CENTER_SIZE"}, seed=0,
                              priors={**PRIORS, "offset": 60.0, "clip": True})
    net = tiny_net(layers, inputs)
    with pytest.raises(CaffeportError, match="decoding needs priors of positive width and height"):
        caffeport.run(net, inputs)
    with pytest.raises(CaffeportError, match="decoding needs priors of positive width and height"):
        to_onnx(net)
