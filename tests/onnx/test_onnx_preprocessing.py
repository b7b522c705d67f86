"""``convert -f onnx --mean/--scale/--swap-rb [--bake-preprocessing]``: the metadata record, the baked graph, verify.

The expected values are `caffeport.run`'s on the image `caffeport.readers.preprocess.image_input` prepares (the
preprocessing ``caffeport run --image`` applies); the baked graph is fed the raw photo, decoded here with
Pillow, reversed to BGR and resized as preprocess resizes, and must give the same outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from PIL import Image

import caffeport
from caffeport.errors import CaffeportError
from caffeport.onnx.export import to_onnx
from caffeport.onnx.preprocessing import PREPROCESSING_KEY, Preprocessing, preprocessing_from_options
from caffeport.readers import read, read_blob
from caffeport.readers.preprocess import image_input, resize_bilinear
from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-4
UF_MEAN, UF_SCALE = "127,127,127", "0.0078125"  # UltraFace's own preprocessing: RGB, (x - 127) / 128


def astronaut() -> Path:
    path = models_dir().parent / "images" / "astronaut.png"
    if not path.is_file():
        pytest.fail(f"the shared test photo is missing: expected it at {path}")
    return path


def caffeport_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def ultraface() -> tuple[Path, Path]:
    folder = models_dir() / "ultraface-rfb320"
    return folder / "RFB-320.caffemodel", folder / "RFB-320.prototxt"


def det1() -> tuple[Path, Path]:
    return models_dir() / "mtcnn" / "det1.caffemodel", models_dir() / "mtcnn" / "det1.prototxt"


def raw_bgr(shape: tuple[int, ...]) -> np.ndarray:
    """The photo as the baked graph takes it: (1, 3, H, W) float32, BGR, 0..255, resized to the input's H x W."""
    with Image.open(astronaut()) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    bgr = resize_bilinear(rgb, shape[2], shape[3])[:, :, ::-1]
    return np.ascontiguousarray(bgr.transpose(2, 0, 1))[None]


def props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], extra: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in extra:
        copy.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def rel(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape
    return float(np.max(np.abs(got.astype(np.float64) - want)) / np.max(np.abs(want)))


def test_metadata_records_the_preprocessing_and_leaves_the_graph_alone(tmp_path: Path) -> None:
    model_path, proto = det1()
    plain, recorded = tmp_path / "plain.onnx", tmp_path / "recorded.onnx"
    assert caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", plain).returncode == 0
    result = caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", recorded,
                           "--mean", "127.5,127.5,127.5", "--scale", "0.0078125", "--swap-rb")
    assert result.returncode == 0, result.stderr
    assert PREPROCESSING_KEY not in props(onnx.load(str(plain)))  # written only when given
    model = onnx.load(str(recorded))
    assert json.loads(props(model)[PREPROCESSING_KEY]) == {"version": 1, "inputs": {"data": {
        "baked": False, "layout": "NCHW", "shape": [1, 3, 12, 12], "resize": "bilinear",
        "image_channel_order": "BGR", "value_range": [0, 255], "swap_rb": True, "channel_order": "RGB",
        "mean": [127.5, 127.5, 127.5], "mean_file": None, "mean_image": False, "scale": 0.0078125,
        "graph_input": "data", "preprocessed_tensor": None}}}
    assert onnx.load(str(plain)).graph == model.graph  # not baked: the graph takes the preprocessed tensor


def test_a_mean_image_of_another_size_is_recorded_as_its_per_channel_means(tmp_path: Path) -> None:
    model_path, proto = det1()
    mean_file = models_dir() / "means" / "ilsvrc12" / "imagenet_mean.binaryproto"
    out = tmp_path / "m.onnx"
    result = caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", out, "--mean", mean_file)
    assert result.returncode == 0, result.stderr
    entry = json.loads(props(onnx.load(str(out)))[PREPROCESSING_KEY])["inputs"]["data"]
    blob = np.asarray(read_blob(mean_file), np.float64)[0]
    assert entry["mean_file"] == str(mean_file) and entry["mean_image"] is False and entry["scale"] == 1.0
    np.testing.assert_allclose(entry["mean"], blob.mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(entry["mean"], [103.89, 116.55, 122.58], atol=0.01)  # MANIFEST's BGR means


def test_baked_ultraface_on_the_raw_photo_gives_the_reference_outputs(tmp_path: Path) -> None:
    model_path, proto = ultraface()
    out = tmp_path / "uf.onnx"
    result = caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", out, "--mean", UF_MEAN,
                           "--scale", UF_SCALE, "--swap-rb", "--bake-preprocessing")
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [n.op_type for n in model.graph.node[:3]] == ["Gather", "Sub", "Mul"]
    entry = json.loads(props(model)[PREPROCESSING_KEY])["inputs"]["input"]
    assert entry["baked"] is True and entry["preprocessed_tensor"] == "input_preprocessed"
    assert json.loads(props(model)["caffeport.tensors"])["input/input"] == "input_preprocessed"

    net = read(model_path, proto)
    shape = tuple(net.inputs["input"])
    prepared = image_input(astronaut(), shape, mean=np.array([127, 127, 127], np.float32), scale=0.0078125,
                           swap_rb=True)
    want = caffeport.run(net, {"input": prepared})
    got = ort_run(model, {"input": raw_bgr(shape)}, extra=("input_preprocessed",))
    np.testing.assert_array_equal(got["input_preprocessed"], prepared)  # one float32 op per step, as numpy's
    for name in ("boxes", "scores"):
        assert rel(got[name], want[name]) <= RTOL, name
    assert want["scores"][0, :, 1].max() > 0.9  # the photo's face is found: the input is a real image, not noise


def test_a_mean_image_of_the_input_size_is_baked_pixel_by_pixel(tmp_path: Path) -> None:
    folder = models_dir() / "cifar10-quick-v2-hdf5"
    model_path, proto = folder / "cifar10_quick_iter_4000.caffemodel", folder / "cifar10_quick.prototxt"
    mean_file = models_dir() / "means" / "cifar10" / "mean.binaryproto"
    out = tmp_path / "c.onnx"
    result = caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", out, "--mean", mean_file,
                           "--bake-preprocessing")
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(out))
    entry = json.loads(props(model)[PREPROCESSING_KEY])["inputs"]["data"]
    assert entry["mean_image"] is True and entry["mean"] is None and entry["swap_rb"] is False
    [sub] = [n for n in model.graph.node if n.op_type == "Sub"]
    [constant] = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name == sub.input[1]]
    np.testing.assert_array_equal(constant, read_blob(mean_file))  # (1, 3, 32, 32): the whole image

    net = read(model_path, proto)
    shape = tuple(net.inputs["data"])
    want = caffeport.run(net, {"data": image_input(astronaut(), shape, mean=read_blob(mean_file))})
    got = ort_run(model, {"data": raw_bgr(shape)})
    assert rel(got["prob"], want["prob"]) <= RTOL


def test_verify_passes_a_baked_model_and_fails_one_baked_with_another_mean(tmp_path: Path) -> None:
    model_path, proto = ultraface()
    good, other = tmp_path / "good.onnx", tmp_path / "other.onnx"
    common = ["--scale", UF_SCALE, "--swap-rb", "--bake-preprocessing"]
    assert caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", good, "--mean", UF_MEAN,
                         *common).returncode == 0
    assert caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", other, "--mean", "104,117,123",
                         *common).returncode == 0
    flags = ["--image", astronaut(), "--mean", UF_MEAN, "--scale", UF_SCALE, "--swap-rb"]
    passed = caffeport_cli("verify", model_path, "-p", proto, good, *flags, "--all-layers")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "input_preprocessed" in passed.stdout  # the baked nodes' result is compared with the reference's input
    assert "FAIL" not in passed.stdout and "tensors match within rtol 0.0001" in passed.stdout
    failed = caffeport_cli("verify", model_path, "-p", proto, other, *flags)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAIL" in failed.stdout and "Traceback" not in failed.stderr
    not_raw = caffeport_cli("verify", model_path, "-p", proto, good, "--random", "0")
    assert not_raw.returncode == 1 and "takes the raw image" in not_raw.stderr
    assert not_raw.stderr.count("\n") == 1 and "Traceback" not in not_raw.stderr


@pytest.mark.parametrize(("extra", "message"), [
    (["--bake-preprocessing"], "no preprocessing given"),
    (["--image-input", "data"], "no preprocessing given"),
    (["--mean", "1,2"], "--mean has 2 values for input 'data' of 3 channels"),
    (["--mean", "127", "--image-input", "nothere"], "the net has no such input"),
    (["--mean", "MNIST"], "the mean image is [1, 28, 28], input 'data' is [3, 12, 12]"),
    (["--mean", "NOFILE"], "no such file"),
    (["--scale", "nan"], "--scale must be a finite number"),
])
def test_convert_refuses_bad_preprocessing_in_one_line_and_writes_nothing(
        tmp_path: Path, extra: list[str], message: str) -> None:
    model_path, proto = det1()
    out = tmp_path / "x.onnx"
    extra = [str(models_dir() / "means" / "mnist" / "mnist_mean.binaryproto") if a == "MNIST" else
             str(tmp_path / "none.binaryproto") if a == "NOFILE" else a for a in extra]
    result = caffeport_cli("convert", model_path, "-p", proto, "-f", "onnx", "-o", out, *extra)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_flags_are_refused_for_other_formats_and_grey_inputs(tmp_path: Path) -> None:
    model_path, proto = det1()
    for flag in (["--mean", "127"], ["--scale", "2"], ["--swap-rb"], ["--bake-preprocessing"]):
        result = caffeport_cli("convert", model_path, "-p", proto, "-f", "npz", "-o", tmp_path / "w.npz", *flag)
        assert result.returncode == 1 and "are for -f onnx, not -f npz" in result.stderr, result.stderr
    lenet = models_dir() / "lenet-v2"
    grey = caffeport_cli("convert", lenet / "lenet_iter_10000.caffemodel", "-p", lenet / "lenet.prototxt", "-f",
                         "onnx", "-o", tmp_path / "l.onnx", "--swap-rb", "--mean", "33")
    assert grey.returncode == 1 and "has 1 channel" in grey.stderr, grey.stderr
    assert list(tmp_path.iterdir()) == []


TWO_INPUTS = """name: "two"
layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } } }
layer { name: "b" type: "Input" top: "b" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
"""


def test_a_net_with_several_inputs_must_name_the_image_input(tmp_path: Path) -> None:
    proto = tmp_path / "two.prototxt"
    proto.write_text(TWO_INPUTS)
    net = read(None, proto)
    with pytest.raises(CaffeportError, match=r"the net has 2 inputs \(a, b\): name the image input"):
        to_onnx(net, preprocessing=Preprocessing(scale=2.0, bake=True))
    spec = preprocessing_from_options(mean="1,2,3", scale=0.5, swap_rb=True, bake=True, inputs=["b"])
    model = to_onnx(net, preprocessing=spec)
    assert list(json.loads(props(model)[PREPROCESSING_KEY])["inputs"]) == ["b"]
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 255, (1, 3, 4, 5)).astype(np.float32) for _ in range(2))
    prepared = (b[:, ::-1] - np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1)) * np.float32(0.5)
    want = caffeport.run(net, {"a": a, "b": prepared})["sum"]
    got = ort_run(model, {"a": a, "b": b})["sum"]
    assert rel(got, want) <= RTOL
