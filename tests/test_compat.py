"""caffeport.compat, the drop-in for caffe_weight_converter: its layout, names, return values and CLI.

Users of the old tool must get the same files where their scripts look for
them (extension always appended), the same pickle structure (a list of
dicts with exactly its keys and value types) and the same return values, but
caffeport's correct weights: the pickle holds the caffemodel's blobs bit for
bit, and the HDF5 file reproduces Caffe's own outputs in Keras 3. Everything
runs on the real models of ../shared/caffe-models.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.compat import (
    KerasBackendError,
    convert_caffemodel_to_dict,
    convert_caffemodel_to_keras,
    main,
)
from caffeport.exporters.pickle import layer_records
from caffeport.ir import Layer, Net
from tests.conftest import models_dir
from tests.proof.reference_nets import RTOL, reference_inputs, reference_outputs, rel_error
from tests.proof.test_keras_reference import keras_a_lenet, load_checked, run_mirror

ROOT = Path(__file__).resolve().parents[1]
#: the old tool's dict keys, in its order
SEED_KEYS = ["name", "type", "weights", "bottoms", "tops"]


def model(name: str) -> tuple[Path, Path]:
    """(prototxt, caffemodel) — the old tool's argument order."""
    root = models_dir()
    files = {
        "a_lenet": ("caffe-reference/a_lenet/deploy.prototxt", "caffe-reference/a_lenet/a_lenet.caffemodel"),
        "b_resnet_block": ("caffe-reference/b_resnet_block/deploy.prototxt",
                           "caffe-reference/b_resnet_block/b_resnet_block.caffemodel"),
        "det1": ("mtcnn/det1.prototxt", "mtcnn/det1.caffemodel"),
        "lenet-v1": ("lenet-v1/lenet.prototxt", "lenet-v1/lenet_iter_10000.caffemodel"),
        "resnet50-head-bn": ("resnet50-head-bn/test.prototxt", "resnet50-head-bn/test.caffemodel"),
        "segfree-fp16": ("hyperlpr-segfree-fp16/SegmenationFree-Inception.prototxt",
                         "hyperlpr-segfree-fp16/SegmenationFree-Inception.caffemodel"),
        "yunet": ("yunet-libfacedetection/yufacedetectnet-open-v1.prototxt",
                  "yunet-libfacedetection/yufacedetectnet-open-v1.caffemodel"),
    }[name]
    prototxt, caffemodel = root / files[0], root / files[1]
    for path in (prototxt, caffemodel):
        if not path.is_file():
            pytest.fail(f"shared test model file missing: {path}")
    return prototxt, caffemodel


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------- the pickle layout


def assert_seed_layout(records: Any) -> None:
    """Exactly the old tool's structure: list of dicts, its keys in its order, its value types."""
    assert type(records) is list and records
    for record in records:
        assert type(record) is dict
        assert list(record) == SEED_KEYS, f"{record.get('name')}: keys {list(record)}"
        assert type(record["name"]) is str and type(record["type"]) is str
        assert type(record["weights"]) is list
        assert all(type(w) is np.ndarray for w in record["weights"])
        for key in ("bottoms", "tops"):
            assert type(record[key]) is list
            for pair in record[key]:
                assert type(pair) is tuple and len(pair) == 2, f"{record['name']} {key}: {pair!r}"
                blob, shape = pair
                assert type(blob) is str
                assert shape is None or (type(shape) is tuple and all(type(d) is int for d in shape)), (
                    f"{record['name']} {key}: shape {shape!r}")


def assert_records_match_net(records: list[dict[str, Any]], net: Net) -> None:
    """One record per layer in net order (after a leading legacy-input record), blobs bit for bit."""
    records = records[1:] if records and records[0]["name"] == "input" and "input" not in net else records
    assert [r["name"] for r in records] == [layer.name for layer in net]
    for record, layer in zip(records, net):
        assert record["type"] == layer.type
        assert len(record["weights"]) == len(layer.blobs), layer.name
        for got, want in zip(record["weights"], layer.blobs):
            # pycaffe's shapes: the stored one, less the leading 1s of a legacy 4-D blob
            dropped = want.ndim - got.ndim
            assert got.dtype == want.dtype and got.shape == want.shape[dropped:], layer.name
            assert all(d == 1 for d in want.shape[:dropped]), layer.name
            assert got.tobytes() == np.ascontiguousarray(want).tobytes(), f"{layer.name}: weights differ"
        assert record["bottoms"] == [(b, s) for b, s in zip(layer.bottoms, layer.bottom_shapes)]
        assert record["tops"] == [(t, s) for t, s in zip(layer.tops, layer.top_shapes)]


@pytest.mark.parametrize("name", ["a_lenet", "det1", "lenet-v1", "resnet50-head-bn", "segfree-fp16", "yunet"])
def test_pickle_has_the_seed_layout_and_the_caffemodel_bits(name: str, tmp_path: Path) -> None:
    prototxt, caffemodel = model(name)
    returned = convert_caffemodel_to_dict(prototxt, caffemodel, out_path=tmp_path / "weights", verbose=False)
    written = tmp_path / "weights.pkl"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pkl"]
    with open(written, "rb") as handle:
        loaded = pickle.load(handle)
    net = caffeport.read(caffemodel, prototxt)
    for records in (returned, loaded):
        assert_seed_layout(records)
        assert_records_match_net(records, net)
        assert all(w.flags.writeable for r in records for w in r["weights"]), "the old tool's arrays were writable"
    weightless = [r["name"] for r in loaded if not r["weights"]]
    assert weightless, "layers without weights must be listed, as the old tool did"


def test_pickle_weightless_layers_and_legacy_input(tmp_path: Path) -> None:
    """det1 declares its input the legacy way: Caffe 1.0 made it a layer 'input' of type Input, listed first."""
    returned = convert_caffemodel_to_dict(*model("det1"))
    assert returned[0] == {"name": "input", "type": "Input", "weights": [], "bottoms": [],
                           "tops": [("data", (1, 3, 12, 12))]}
    pool1 = next(r for r in returned if r["name"] == "pool1")
    assert pool1 == {"name": "pool1", "type": "Pooling", "weights": [], "bottoms": [("conv1", (1, 10, 10, 10))],
                     "tops": [("pool1", (1, 10, 5, 5))]}
    lenet = convert_caffemodel_to_dict(*model("a_lenet"))  # an Input layer of its own: nothing added
    assert [r["name"] for r in lenet][:2] == ["data", "conv1"]
    assert lenet[0]["tops"] == [("data", (2, 1, 28, 28))]


def test_pickle_unknown_shape_is_none() -> None:
    """Caffe always knew shapes; where caffeport's inference cannot, the pickle says None, never ()."""
    yunet = convert_caffemodel_to_dict(*model("yunet"))
    detection = next(r for r in yunet if r["type"] == "DetectionOutput")
    assert detection["tops"] == [("detection_out", None)]
    net = Net(layers=[Layer("odd", "Mystery", bottoms=["x"], tops=["y"], bottom_shapes=[(1, 2)], top_shapes=[])])
    assert layer_records(net)[0]["tops"] == [("y", None)]


def test_dict_without_out_path_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    records = convert_caffemodel_to_dict(*model("a_lenet"))
    assert type(records) is list and len(records) == 9
    assert list(tmp_path.iterdir()) == []
    assert capsys.readouterr().out == "", "the old tool printed nothing here unless verbose"


def test_pickle_format_through_caffeport_convert(tmp_path: Path) -> None:
    """The same format is caffeport's own `--format pickle`, defaulting to the raw `caffe` backend."""
    prototxt, caffemodel = model("resnet50-head-bn")
    result = caffeport.convert(caffemodel, prototxt, tmp_path / "w.pkl", format="pickle")
    assert result.backend == "caffe"
    with open(tmp_path / "w.pkl", "rb") as handle:
        records = pickle.load(handle)
    bn = next(r for r in records if r["type"] == "BatchNorm")
    assert len(bn["weights"]) == 3, "raw blobs: mean, variance and the scale factor, as Caffe stores them"


# ---------------------------------------------------------------- Keras HDF5


def test_keras_h5_reproduces_caffe_in_keras3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prototxt, caffemodel = model("a_lenet")
    returned = convert_caffemodel_to_keras(tmp_path / "lenet", prototxt, caffemodel, verbose=False)  # type: ignore[func-returns-value]
    assert returned is None, "the old tool returned None"
    path = tmp_path / "lenet.h5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.h5"], "'.h5' appended, as the old tool did"
    assert "wrote" in capsys.readouterr().out
    mirror = keras_a_lenet({})
    load_checked(mirror.model, path)  # load_weights(by_name=True), failing on any layer it would skip
    got = run_mirror(mirror, reference_inputs("a_lenet"))
    error = rel_error(got["prob__prob"], reference_outputs("a_lenet")["prob__prob"])
    assert error <= RTOL, f"prob differs from Caffe's by {error:.3g} (relative)"


def test_keras_h5_has_the_seed_file_layout(tmp_path: Path) -> None:
    """Root attributes and <layer>/<layer>/<weight>:0 datasets listed in the group's weight_names, as the old tool."""
    prototxt, caffemodel = model("a_lenet")
    convert_caffemodel_to_keras(tmp_path / "w", prototxt, caffemodel, verbose=False)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert [_text(n) for n in f.attrs["layer_names"]] == ["conv1", "conv2", "ip1", "ip2"]
        assert _text(f.attrs["backend"]) == "tensorflow"
        assert _text(f.attrs["keras_version"]).startswith("2.")
        assert [_text(n) for n in f["conv1"].attrs["weight_names"]] == ["conv1/kernel:0", "conv1/bias:0"]
        assert f["conv1/conv1/kernel:0"].shape == (5, 5, 1, 20)
        assert f["ip1/ip1/kernel:0"].shape == (800, 500)


def test_extension_is_always_appended_and_output_replaced(tmp_path: Path) -> None:
    prototxt, caffemodel = model("a_lenet")
    convert_caffemodel_to_keras(str(tmp_path / "w.h5"), str(prototxt), str(caffemodel), verbose=False)
    assert (tmp_path / "w.h5.h5").is_file(), "the old tool appended '.h5' to any name"
    target = tmp_path / "again.h5"
    target.write_bytes(b"old")
    convert_caffemodel_to_keras(tmp_path / "again", prototxt, caffemodel, verbose=False)
    assert h5py.is_hdf5(target), "an existing output is replaced silently, as the old tool did"
    convert_caffemodel_to_dict(prototxt, caffemodel, out_path=tmp_path / "again")
    assert (tmp_path / "again.pkl").is_file()


def test_never_writes_over_an_input(tmp_path: Path) -> None:
    prototxt, caffemodel = model("a_lenet")
    copy = tmp_path / "model.h5"
    copy.write_bytes(caffemodel.read_bytes())
    with pytest.raises(caffeport.CaffeportError, match="input"):
        convert_caffemodel_to_keras(tmp_path / "model", prototxt, copy, verbose=False)
    assert copy.read_bytes() == caffemodel.read_bytes()


def test_include_layers_without_weights(tmp_path: Path) -> None:
    prototxt, caffemodel = model("a_lenet")
    convert_caffemodel_to_keras(tmp_path / "all", prototxt, caffemodel, include_layers_without_weights=True,
                                verbose=False)
    with h5py.File(tmp_path / "all.h5", "r") as f:
        names = [_text(n) for n in f.attrs["layer_names"]]
        assert names == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
        assert len(f["pool1"].attrs["weight_names"]) == 0


def test_include_unknown_layer_types(tmp_path: Path) -> None:
    """yunet's Normalize (SSD-Caffe) is a type caffeport does not know: kept by default, dropped when asked."""
    prototxt, caffemodel = model("yunet")
    convert_caffemodel_to_keras(tmp_path / "kept", prototxt, caffemodel, verbose=False)
    convert_caffemodel_to_keras(tmp_path / "dropped", prototxt, caffemodel, include_unknown_layer_types=False,
                                verbose=False)
    with h5py.File(tmp_path / "kept.h5", "r") as kept, h5py.File(tmp_path / "dropped.h5", "r") as dropped:
        assert "conv3_3_norm" in kept and "conv3_3_norm" not in dropped
        assert "conv1_1" in kept and "conv1_1" in dropped


def test_batchnorm_is_divided_by_its_scale_factor(tmp_path: Path) -> None:
    """The old tool wrote Caffe's mean*s, var*s undivided and paired BatchNorm with the next layer in the file.

    b_resnet_block stores s = 123.4 or 0.75: the file must hold mean/s and var/s (times 1/s in float32, as
    Caffe computes it), with gamma and beta from the Scale that consumes the BatchNorm's output.
    """
    prototxt, caffemodel = model("b_resnet_block")
    convert_caffemodel_to_keras(tmp_path / "bn", prototxt, caffemodel, verbose=False)
    net = caffeport.read(caffemodel, prototxt)
    with h5py.File(tmp_path / "bn.h5", "r") as f:
        group = f["bn_conv0/bn_conv0"]
        assert sorted(group) == ["beta:0", "gamma:0", "moving_mean:0", "moving_variance:0"]
        mean, var, factor = net.layer("bn_conv0").blobs
        assert factor[0] != 1
        inverse = np.float32(1) / factor.astype(np.float32)[0]
        np.testing.assert_array_equal(group["moving_mean:0"][()], mean * inverse)
        np.testing.assert_array_equal(group["moving_variance:0"][()], var * inverse)
        gamma, beta = net.layer("scale_conv0").blobs
        np.testing.assert_array_equal(group["gamma:0"][()], gamma)
        np.testing.assert_array_equal(group["beta:0"][()], beta)
        assert "scale_conv0" not in f


@pytest.mark.parametrize(("keras_backend", "attr"), [("tf", "tensorflow"), ("th", "theano"), ("cntk", "cntk")])
def test_keras_backends(keras_backend: str, attr: str, tmp_path: Path) -> None:
    prototxt, caffemodel = model("a_lenet")
    convert_caffemodel_to_keras(tmp_path / "w", prototxt, caffemodel, keras_backend=keras_backend, verbose=False)
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert _text(f.attrs["backend"]) == attr


def test_unknown_keras_backend_is_a_value_error(tmp_path: Path) -> None:
    """The old tool raised ValueError for it; it is also a CaffeportError, so the CLI prints one line."""
    prototxt, caffemodel = model("a_lenet")
    with pytest.raises(ValueError, match="keras_backend") as raised:
        convert_caffemodel_to_keras(tmp_path / "w", prototxt, caffemodel, keras_backend="mxnet")
    assert isinstance(raised.value, KerasBackendError) and isinstance(raised.value, caffeport.CaffeportError)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the command line


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport.compat", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def test_cli_pickle(tmp_path: Path) -> None:
    prototxt, caffemodel = model("det1")
    result = run(tmp_path / "det1", prototxt, caffemodel, "-f", "pickle")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "det1.pkl", "rb") as handle:
        loaded = pickle.load(handle)
    assert_seed_layout(loaded)
    assert_records_match_net(loaded, caffeport.read(caffemodel, prototxt))


def test_cli_hdf5_with_every_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prototxt, caffemodel = model("a_lenet")
    assert main([str(tmp_path / "w"), str(prototxt), str(caffemodel), "-n", "-u", "-b", "th", "-v"]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "wrote" in out
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert _text(f.attrs["backend"]) == "theano"
        assert "pool1" in f
    assert main([str(tmp_path / "long"), str(prototxt), str(caffemodel), "--format", "hdf5",
                 "--include_non_weight", "--skip_unknown", "--backend", "tf", "--verbose"]) == 0
    assert (tmp_path / "long.h5").is_file()


@pytest.mark.parametrize("problem", ["missing", "corrupt"])
def test_cli_bad_input_is_one_line_and_exit_1(problem: str, tmp_path: Path) -> None:
    prototxt, caffemodel = model("a_lenet")
    if problem == "missing":
        bad = tmp_path / "nope.caffemodel"
    else:
        bad = tmp_path / "cut.caffemodel"
        bad.write_bytes(caffemodel.read_bytes()[:5000])
    for fmt in ("pickle", "hdf5"):
        result = run(tmp_path / "out", prototxt, bad, "-f", fmt)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("caffe-weight-converter: error: "), result.stderr
        assert str(bad) in lines[0]
        assert not list(tmp_path.glob("out*")), "no output, not even a partial one"


def test_pickle_gives_v1_blobs_in_the_shapes_pycaffe_gave(tmp_path: Path) -> None:
    """MANIFEST: lenet-v1 stores conv bias 1x1x1x20 and IP weight 1x1x500x800; Caffe's layers hold (20,), (500, 800)."""
    prototxt, caffemodel = model("lenet-v1")
    records = {r["name"]: r for r in convert_caffemodel_to_dict(prototxt, caffemodel)}
    assert [w.shape for w in records["conv1"]["weights"]] == [(20, 1, 5, 5), (20,)]
    assert [w.shape for w in records["ip1"]["weights"]] == [(500, 800), (500,)]
