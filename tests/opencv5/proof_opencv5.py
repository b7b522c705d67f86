"""OpenCV 5, which dropped its Caffe importer, runs caffeport's ONNX exports and gives the reference's outputs.

Run in a venv of its own (`.ci/run` makes ``.venv-opencv5``: OpenCV 5 cannot
sit beside the main venv's OpenCV 4, the Caffe oracle there), holding
caffeport with its ``onnx`` extra, ``opencv-python-headless==5.0.0.93`` and
pytest:

    .venv-opencv5/bin/python -m pytest -q -p no:cacheprovider tests/opencv5/proof_opencv5.py

The file name does not start with ``test_``, so the main suite does not
collect it. Each model is exported with ``caffeport.convert(format="onnx")``
(the default opset, unless the test says otherwise), read back from the file
with ``cv2.dnn.readNetFromONNX`` and run; every graph output must match
`caffeport.run`, the project's reference forward (checked against Caffe's
own outputs elsewhere), at 1e-4 relative, and SSD detection rows exactly in
count, image ids and labels, and to 1e-4 in scores and boxes, in the
reference's order.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import caffeport
import caffeport.exporters.onnx_format  # registers -f onnx
from caffeport.ir import Layer
from caffeport.onnx import DEFAULT_OPSET
from tests.conftest import models_dir
from tests.onnx.onnx_helpers import tiny_net
from tests.onnx.test_onnx_export import SHARED
from tests.onnx.test_onnx_ssd import CASES, assert_rows_equal, astronaut, ssd_case
from tests.proof.reference_nets import REFERENCE_MODELS, assert_close, model_files, reference_inputs

#: every shared model the ONNX tests export (tests/onnx/test_onnx_export.py's table), and yunet
MODELS = {**SHARED, "yunet": ("yunet-libfacedetection/yufacedetectnet-open-v1.caffemodel",
                              "yunet-libfacedetection/yufacedetectnet-open-v1.prototxt")}


def export(name: str, out: Path, **options: object) -> caffeport.Net:
    model, proto = MODELS[name]
    caffeport.convert(models_dir() / model, models_dir() / proto, out, format="onnx", **options)  # type: ignore
    return caffeport.read(models_dir() / model, models_dir() / proto)


def run_opencv(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's graph outputs, as OpenCV 5's ONNX importer and runtime compute them."""
    outputs = [o.name for o in onnx.load(str(path)).graph.output]
    net = cv2.dnn.readNetFromONNX(str(path))
    for key, value in inputs.items():
        net.setInput(np.ascontiguousarray(value), key)
    return {name: np.asarray(value) for name, value in zip(outputs, net.forward(outputs), strict=True)}


def random_inputs(net: caffeport.Net, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1, 1, size=s).astype(np.float32) for k, s in net.inputs.items()}


def check_outputs(path: Path, net: caffeport.Net, inputs: dict[str, np.ndarray]) -> None:
    """Every graph output OpenCV 5 computes from ``path`` equals the reference's at 1e-4."""
    want = caffeport.run(net, inputs)
    got = run_opencv(path, inputs)
    assert set(got) == set(want) - set(net.inputs)
    for key, value in got.items():
        assert_close(key, value.reshape(want[key].shape), want[key])


def test_this_is_opencv_5_without_a_caffe_importer() -> None:
    assert cv2.__version__.split(".")[0] == "5", cv2.__version__
    assert not hasattr(cv2.dnn, "readNetFromCaffe")


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"yunet"}))
def test_opencv5_runs_the_export(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.onnx"
    net = export(name, path)
    assert onnx.load(str(path)).opset_import[0].version == DEFAULT_OPSET == 17
    check_outputs(path, net, random_inputs(net))


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_opencv5_runs_the_caffe_reference_models(name: str, tmp_path: Path) -> None:
    """The Caffe-written nets (grouped deconvolution, PReLU, the unrolled LSTM with cont), on Caffe's own inputs."""
    path = tmp_path / f"{name}.onnx"
    caffemodel, prototxt = model_files(name)
    caffeport.convert(caffemodel, prototxt, path, format="onnx")
    net = caffeport.read(caffemodel, prototxt)
    check_outputs(path, net, reference_inputs(name))


def test_opencv5_runs_yunet_with_its_detection_output(tmp_path: Path) -> None:
    path = tmp_path / "yunet.onnx"
    net = export("yunet", path)
    x = astronaut()
    want = caffeport.run(net, {"data": x})["detection_out"]
    got = run_opencv(path, {"data": x})
    assert list(got) == ["detection_out"] and want.shape[2] > 10
    assert_rows_equal(got["detection_out"], want)


def test_opencv5_runs_yunet_heads(tmp_path: Path) -> None:
    path = tmp_path / "heads.onnx"
    net = export("yunet", path, ssd_heads=True)
    x = astronaut()
    want = caffeport.run(net, {"data": x}, all_layers=True)
    got = run_opencv(path, {"data": x})
    assert list(got) == ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"]
    for name, value in got.items():
        assert_close(name, value.reshape(want[f"{name}/{name}"].shape), want[f"{name}/{name}"])


@pytest.mark.parametrize("seed", [0, 1])
def test_opencv5_yunet_detections_on_random_images(seed: int, tmp_path: Path) -> None:
    """Many weak overlapping candidates: NMS and the keep_top_k cut (50) both at work."""
    path = tmp_path / "yunet.onnx"
    net = export("yunet", path)
    x = np.random.default_rng(seed).uniform(0, 255, (1, 3, 240, 320)).astype(np.float32)
    want = caffeport.run(net, {"data": x})["detection_out"]
    assert_rows_equal(run_opencv(path, {"data": x})["detection_out"], want)


@pytest.mark.parametrize("name", sorted(CASES))
def test_opencv5_detection_output_cases(name: str, tmp_path: Path) -> None:
    """The hand-made SSD heads of tests/onnx/test_onnx_ssd.py: tied scores, per-class locs, every code type."""
    batch, classes, share, params = CASES[name]
    layers, inputs = ssd_case(batch, classes, share, params, seed=len(name), loc_scale=0.3)
    check_tiny(layers, inputs, tmp_path)


def test_opencv5_boxes_without_area_overlap_nothing(tmp_path: Path) -> None:
    """OpenCV's NMS gives two empty boxes an overlap of 1: the lowering keeps them out of its NMS."""
    layers, inputs = ssd_case(1, 2, True, {"code_type": "CORNER", "nms_param": {"nms_threshold": 0.1}}, seed=5,
                              loc_scale=4.0)
    rows = check_tiny(layers, inputs, tmp_path)
    assert np.sum((rows[..., 5] < rows[..., 3]) | (rows[..., 6] < rows[..., 4])) > 5


def test_opencv5_an_image_without_candidates(tmp_path: Path) -> None:
    """OpenCV refuses a TopK of K = 0: the keep_top_k TopK of an image with nothing kept must still run."""
    layers, inputs = ssd_case(2, 2, True, {"code_type": "CENTER_SIZE", "confidence_threshold": 0.6,
                                           "keep_top_k": 5}, seed=2)
    inputs["conf"][0] = 0.25
    rows = check_tiny(layers, inputs, tmp_path)
    assert rows.shape == (1, 1, 5, 7) and np.all(rows[0, 0, :, 0] == 1)


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_opencv5_runs_other_opsets(opset: int, tmp_path: Path) -> None:
    path = tmp_path / "yunet.onnx"
    net = export("yunet", path, opset=opset)
    assert onnx.load(str(path)).opset_import[0].version == opset
    x = astronaut()
    assert_rows_equal(run_opencv(path, {"data": x})["detection_out"], caffeport.run(net, {"data": x})["detection_out"])


def check_tiny(layers: list[Layer], inputs: dict[str, np.ndarray], tmp_path: Path) -> np.ndarray:
    """Export a hand-made net, run it in OpenCV 5, compare its rows with the reference's; the reference rows."""
    from caffeport.onnx import write_onnx

    net = tiny_net(layers, inputs)
    path = tmp_path / "tiny.onnx"
    write_onnx(net, path)
    graph_inputs = {i.name for i in onnx.load(str(path)).graph.input}
    want = caffeport.run(net, inputs)["rows"]
    got = run_opencv(path, {k: v for k, v in inputs.items() if k in graph_inputs})
    assert_rows_equal(got["rows"], want)
    return want
