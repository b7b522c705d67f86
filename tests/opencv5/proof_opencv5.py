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

Preprocessing (``--mean``, ``--scale``, ``--swap-rb``, `caffeport.onnx.preprocessing`): a model exported with
``--bake-preprocessing`` is fed the raw photo as an OpenCV user makes it (``cv2.dnn.blobFromImage`` without mean,
scale or swap: BGR, 0..255, NCHW float32), the reference the photo as Caffe saw it (channels swapped, mean
subtracted, scaled, in numpy); one exported without baking is fed the blob ``blobFromImage`` makes from its
metadata record. Negative controls show those checks fail on a wrong input or a wrong baked mean.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

import caffeport
import caffeport.exporters.onnx  # registers -f onnx
from caffeport.ir import Layer
from caffeport.onnx import DEFAULT_OPSET
from tests.conftest import models_dir
from tests.onnx.onnx_helpers import tiny_net
from tests.onnx.test_onnx_export import SHARED
from tests.onnx.test_onnx_ssd import CASES, IMAGES, assert_rows_equal, astronaut, ssd_case
from tests.proof.reference_nets import REFERENCE_MODELS, RTOL, assert_close, model_files, reference_inputs, rel_error

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


# ----------------------------------------------------------------------------- preprocessing: baked and recorded
#: per model, the --mean and --scale its export gets (with --swap-rb): UltraFace's and MTCNN's own preprocessing
#: (RGB, (x - 127) / 128 and (x - 127.5) / 128); yunet's is not its own, it puts the baked nodes before the
#: DetectionOutput lowering
PREPROCESSING = {"ultraface": ("127,127,127", "0.0078125"), "mtcnn-det3": ("127.5,127.5,127.5", "0.0078125"),
                 "yunet": ("104,117,123", "0.5")}
ROOT = Path(__file__).resolve().parents[2]


def convert_cli(name: str, out: Path, *flags: str) -> caffeport.Net:
    """``caffeport convert MODEL -p PROTO -f onnx -o out FLAGS...`` as a user runs it; the net, read back."""
    model, proto = (models_dir() / f for f in MODELS[name])
    result = subprocess.run([sys.executable, "-m", "caffeport", "convert", str(model), "-p", str(proto), "-f", "onnx",
                             "-o", str(out), *flags], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return caffeport.read(model, proto)


def photo(size: tuple[int, int], **blob_options: object) -> np.ndarray:
    """The shared photo as OpenCV loads it (HWC uint8, BGR), made a (1, 3, H, W) float32 blob by blobFromImage."""
    image = cv2.imread(str(IMAGES / "astronaut.png"))
    assert image is not None and image.dtype == np.uint8, f"cannot read {IMAGES / 'astronaut.png'}"
    return cv2.dnn.blobFromImage(image, size=(size[1], size[0]), **blob_options)


def as_caffe_saw_it(raw: np.ndarray, mean: str, scale: str) -> np.ndarray:
    """``raw`` (BGR, 0..255) with Caffe's transform_param in numpy: R and B swapped, the mean subtracted, scaled."""
    means = np.array([float(v) for v in mean.split(",")], np.float32).reshape(1, -1, 1, 1)
    return ((raw[:, ::-1] - means) * np.float32(scale)).astype(np.float32)


def compare(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Each output: SSD rows by `assert_rows_equal`, the others by `assert_close` at RTOL (AssertionError if not)."""
    for key, value in got.items():
        if key == "detection_out":
            assert_rows_equal(value, want[key])
        else:
            assert_close(key, value.reshape(want[key].shape), want[key])


def baked(name: str, tmp_path: Path, mean: str | None = None) -> tuple[Path, caffeport.Net, str, tuple[int, int]]:
    """``name`` exported with its --mean (or ``mean``), --scale, --swap-rb and --bake-preprocessing."""
    own_mean, scale = PREPROCESSING[name]
    path = tmp_path / f"{name}-baked-{'own' if mean is None else 'other'}-mean.onnx"
    net = convert_cli(name, path, "--mean", mean or own_mean, "--scale", scale, "--swap-rb", "--bake-preprocessing")
    [(image_input, shape)] = net.inputs.items()
    return path, net, image_input, (int(shape[2]), int(shape[3]))


@pytest.mark.parametrize("name", sorted(PREPROCESSING))
def test_opencv5_runs_a_baked_export_on_the_raw_image(name: str, tmp_path: Path) -> None:
    path, net, image_input, size = baked(name, tmp_path)
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [image_input]  # users feed it by the Caffe input's name
    assert [n.op_type for n in model.graph.node[:3]] == ["Gather", "Sub", "Mul"]
    entry = json.loads({p.key: p.value for p in model.metadata_props}["caffeport.preprocessing"])["inputs"]
    assert entry[image_input]["baked"] is True and entry[image_input]["swap_rb"] is True
    raw = photo(size)
    assert raw.shape == (1, 3, *size) and raw.dtype == np.float32 and raw.max() > 200  # 0..255, not scaled
    mean, scale = PREPROCESSING[name]
    want = caffeport.run(net, {image_input: as_caffe_saw_it(raw, mean, scale)})
    got = run_opencv(path, {image_input: raw})
    assert set(got) == set(want) - set(net.inputs)
    compare(got, want)
    if name == "ultraface":
        assert want["scores"][0, :, 1].max() > 0.9  # the photo's face is found: the preprocessing is UltraFace's own
    if name == "yunet":
        assert want["detection_out"].shape[2] > 5


def test_opencv5_computes_the_baked_preprocessed_tensor_bit_for_bit(tmp_path: Path) -> None:
    """The Gather/Sub/Mul nodes alone, in OpenCV 5: ``<input>_preprocessed`` is numpy's preprocessed photo exactly
    (one float32 operation per step, as preprocessing.py says)."""
    path, _, image_input, size = baked("ultraface", tmp_path)
    model = onnx.load(str(path))
    preprocessed = f"{image_input}_preprocessed"
    assert preprocessed in {o for n in model.graph.node for o in n.output}
    model.graph.output.append(onnx.helper.make_tensor_value_info(preprocessed, onnx.TensorProto.FLOAT,
                                                                 [1, 3, *size]))
    extended = tmp_path / "with-preprocessed.onnx"
    onnx.save(model, str(extended))
    raw = photo(size)
    got = run_opencv(extended, {image_input: raw})[preprocessed]
    np.testing.assert_array_equal(got.reshape(1, 3, *size), as_caffe_saw_it(raw, *PREPROCESSING["ultraface"]))


@pytest.mark.parametrize("name", sorted(PREPROCESSING))
def test_opencv5_baked_check_fails_on_an_image_preprocessed_twice(name: str, tmp_path: Path) -> None:
    """Negative control: the baked model fed the already preprocessed photo (so preprocessed twice) fails the check."""
    path, net, image_input, size = baked(name, tmp_path)
    prepared = as_caffe_saw_it(photo(size), *PREPROCESSING[name])
    want = caffeport.run(net, {image_input: prepared})
    got = run_opencv(path, {image_input: prepared})
    assert set(got) == set(want) - set(net.inputs)
    with pytest.raises(AssertionError):
        compare(got, want)


def test_opencv5_baked_check_fails_for_a_model_baked_with_another_mean(tmp_path: Path) -> None:
    """Negative control: UltraFace baked with Caffe's ImageNet mean instead of its own, on the same raw photo."""
    path, net, image_input, size = baked("ultraface", tmp_path, mean="104,117,123")
    raw = photo(size)
    want = caffeport.run(net, {image_input: as_caffe_saw_it(raw, *PREPROCESSING["ultraface"])})
    got = run_opencv(path, {image_input: raw})
    errors = {key: rel_error(value.reshape(want[key].shape), want[key]) for key, value in got.items()}
    assert set(errors) == {"boxes", "scores"} and max(errors.values()) > 10 * RTOL, errors  # well beyond, not marginal
    with pytest.raises(AssertionError):
        compare(got, want)


@pytest.mark.parametrize("name", ["ultraface", "mtcnn-det3"])
def test_opencv5_runs_an_export_with_recorded_preprocessing_on_the_prepared_input(name: str, tmp_path: Path) -> None:
    """Not baked: the graph takes the preprocessed tensor, which blobFromImage makes from the metadata record."""
    mean, scale = PREPROCESSING[name]
    path = tmp_path / f"{name}-recorded.onnx"
    net = convert_cli(name, path, "--mean", mean, "--scale", scale, "--swap-rb")
    [image_input] = net.inputs
    model = onnx.load(str(path))
    assert not any(n.name.startswith("preprocess/") for n in model.graph.node)  # the graph is left alone
    entry = json.loads({p.key: p.value for p in model.metadata_props}["caffeport.preprocessing"])["inputs"][image_input]
    assert entry["baked"] is False and entry["preprocessed_tensor"] is None and entry["layout"] == "NCHW"
    size = (entry["shape"][2], entry["shape"][3])
    # what the record tells an OpenCV user: blobFromImage swaps R and B, subtracts the mean (in the swapped order,
    # as the record gives it), then scales
    blob = photo(size, scalefactor=entry["scale"], mean=tuple(entry["mean"]), swapRB=entry["swap_rb"])
    prepared = as_caffe_saw_it(photo(size), mean, scale)
    np.testing.assert_allclose(blob, prepared, rtol=0, atol=1e-6)
    want = caffeport.run(net, {image_input: prepared})
    got = run_opencv(path, {image_input: blob})
    assert set(got) == set(want) - set(net.inputs)
    compare(got, want)
    with pytest.raises(AssertionError):  # negative control: the raw photo is not what this graph takes
        compare(run_opencv(path, {image_input: photo(size)}), want)
