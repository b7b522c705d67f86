"""``caffeport check`` reads files from anywhere: the HDF5 snapshot reader's rules, clean errors, no hang.

Each hostile file is made here with h5py. `read_weights_file` is what the
check reads first (before any Keras import), so most cases call it directly;
a FIFO goes through the real command line in a subprocess, since a regression
there is a process blocked in ``open()`` that only SIGKILL ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, InputFileError
from caffeport.keras_model import read_weights_file
from tests.hostile.hostile_helpers import HANG_SECONDS, hang_guard
from tests.proof.reference_nets import B_RESNET_EPS, model_files

ROOT = Path(__file__).resolve().parents[1]


def legacy_file(path: Path, kernel: object = None, *, weight_names: object = None, layer_names: object = None) -> Path:
    """A keras-h5 file with one layer ``conv1`` (kernel and bias) as Keras and caffeport write it.

    ``kernel`` replaces the kernel dataset's link (an h5py link object);
    ``weight_names``/``layer_names`` replace those attributes (``"missing"`` deletes weight_names).
    """
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"] if layer_names is None else layer_names
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        group = f.create_group("conv1")
        inner = group.create_group("conv1")
        if kernel is None:
            inner["kernel:0"] = np.zeros((3, 3, 1, 2), "f4")
        else:
            inner["kernel:0"] = kernel
        inner["bias:0"] = np.zeros(2, "f4")
        if weight_names != "missing":
            group.attrs["weight_names"] = [b"conv1/kernel:0", b"conv1/bias:0"] if weight_names is None \
                else weight_names
    return path


def refused(path: Path, match: str) -> str:
    with hang_guard(), pytest.raises(CaffeportError, match=match) as info:
        read_weights_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def test_a_well_formed_file_reads(tmp_path: Path) -> None:
    weights = read_weights_file(legacy_file(tmp_path / "w.h5"))
    assert weights.kind == "keras-h5"
    assert weights.sources["conv1"].names == ["kernel", "bias"]
    assert weights.sources["conv1"].shapes == [(3, 3, 1, 2), (2,)]


def test_a_caffeport_file_records_its_eps(tmp_path: Path) -> None:
    path = tmp_path / "resnet.h5"
    caffeport.convert(*model_files("b_resnet_block"), path)
    assert read_weights_file(path).eps == pytest.approx(B_RESNET_EPS)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "w.h5"
    os.mkfifo(fifo)
    with hang_guard(), pytest.raises(InputFileError, match="is not a regular file"):
        read_weights_file(fifo)
    try:
        result = subprocess.run([sys.executable, "-m", "caffeport", "check", str(fifo), "--keras-model",
                                 "tests.keras_models:lenet"], capture_output=True, text=True, cwd=ROOT,
                                timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"caffeport check blocked on a FIFO for {HANG_SECONDS} s") from exc
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"caffeport: error: {fifo}: is not a regular file\n"


def test_external_and_soft_links_are_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.h5"
    with h5py.File(elsewhere, "w") as f:
        f["secret"] = np.arange(18, dtype="f4").reshape(3, 3, 1, 2)
    message = refused(legacy_file(tmp_path / "ext.h5", h5py.ExternalLink(str(elsewhere), "/secret")),
                      "ExternalLink, which Caffe never writes: refused")
    assert "layer 'conv1'" in message
    refused(legacy_file(tmp_path / "soft.h5", h5py.SoftLink("/conv1/conv1/bias:0")), "SoftLink")

    # the layer's group itself linked from another file
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
        f["conv1"] = h5py.ExternalLink(str(elsewhere), "/")
    refused(path, "ExternalLink")


def test_external_and_virtual_storage_are_refused(tmp_path: Path) -> None:
    raw = tmp_path / "values.bin"
    raw.write_bytes(np.arange(18, dtype="f4").tobytes())
    path = legacy_file(tmp_path / "external.h5")
    with h5py.File(path, "r+") as f:
        del f["conv1/conv1/kernel:0"]
        f["conv1/conv1"].create_dataset("kernel:0", shape=(3, 3, 1, 2), dtype="f4", external=[(str(raw), 0, 72)])
    refused(path, "external or virtual storage")

    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as f:
        f["k"] = np.zeros((3, 3, 1, 2), "f4")
    layout = h5py.VirtualLayout(shape=(3, 3, 1, 2), dtype="f4")
    layout[...] = h5py.VirtualSource(str(source), "k", shape=(3, 3, 1, 2))
    path = legacy_file(tmp_path / "virtual.h5")
    with h5py.File(path, "r+") as f:
        del f["conv1/conv1/kernel:0"]
        f["conv1/conv1"].create_virtual_dataset("kernel:0", layout)
    refused(path, "external or virtual storage")


def test_malformed_attributes_are_clean_errors(tmp_path: Path) -> None:
    refused(legacy_file(tmp_path / "scalar.h5", layer_names=b"conv1"), r"attribute layer_names is a scalar")
    refused(legacy_file(tmp_path / "numbers.h5", layer_names=np.array([1, 2])), "expected text")
    refused(legacy_file(tmp_path / "2d.h5", layer_names=np.array([[b"conv1"]])), "is 2-D")
    message = refused(legacy_file(tmp_path / "noweights.h5", weight_names="missing"), "no weight_names attribute")
    assert "layer 'conv1'" in message
    refused(legacy_file(tmp_path / "scalarw.h5", weight_names=b"conv1/kernel:0"), "attribute weight_names is a scalar")
    refused(legacy_file(tmp_path / "absolute.h5", weight_names=[b"/conv1/conv1/kernel:0"]), "not a path inside")
    refused(legacy_file(tmp_path / "up.h5", weight_names=[b"../conv1/kernel:0"]), "not a path inside")
    refused(legacy_file(tmp_path / "nosuch.h5", weight_names=[b"conv1/gamma:0"]), "no such dataset")
    refused(legacy_file(tmp_path / "badutf8.h5", layer_names=np.array([b"\xff\xfe"], dtype="S2")), "UTF-8")
    refused(legacy_file(tmp_path / "nogroup.h5", layer_names=[b"conv9"]), "no such group")

    path = legacy_file(tmp_path / "meta.h5")
    with h5py.File(path, "r+") as f:
        f.attrs["caffeport"] = "{not json"
    refused(path, "attribute caffeport is not JSON")
    with h5py.File(path, "r+") as f:
        f.attrs["caffeport"] = json.dumps({"batchnorm_eps": {"bn": "big"}})
    refused(path, "batchnorm_eps must map layer names to numbers")


def test_keras_splits_long_name_lists_and_so_do_we(tmp_path: Path) -> None:
    """Keras writes a list too long for one attribute as layer_names0, layer_names1, ...; its loader joins them."""
    path = legacy_file(tmp_path / "chunked.h5")
    with h5py.File(path, "r+") as f:
        del f.attrs["layer_names"]
        f.attrs["layer_names0"] = [b"conv1"]
        f.create_group("dense")
        f["dense"].attrs["weight_names"] = np.array([], dtype="S1")
        f.attrs["layer_names1"] = [b"dense"]
    assert list(read_weights_file(path).sources) == ["conv1"]


def test_keras3_files_follow_the_same_rules(tmp_path: Path) -> None:
    def keras3_file(name: str) -> Path:
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            vars_ = f.create_group("layers/conv2d/vars")
            vars_.attrs["name"] = "conv1"
            vars_["0"] = np.zeros((3, 3, 1, 2), "f4")
            vars_["1"] = np.zeros(2, "f4")
        return path

    weights = read_weights_file(keras3_file("good.weights.h5"))
    assert weights.kind == "keras3"
    assert weights.sources["layers/conv2d"].saved_from == "conv1"
    assert weights.sources["layers/conv2d"].shapes == [(3, 3, 1, 2), (2,)]

    path = keras3_file("cycle.weights.h5")
    with h5py.File(path, "r+") as f:
        f["layers/conv2d/loop"] = f["layers"]  # a hard-linked cycle: walking it would never end
    refused(path, "reached twice through hard links")

    path = keras3_file("ext.weights.h5")
    with h5py.File(path, "r+") as f:
        f["layers/dense"] = h5py.ExternalLink(str(tmp_path / "good.weights.h5"), "/layers/conv2d")
    refused(path, "ExternalLink")

    path = keras3_file("names.weights.h5")
    with h5py.File(path, "r+") as f:
        f["layers/conv2d/vars/7"] = np.zeros(1, "f4")
    refused(path, "not named 0..2")

    path = keras3_file("name.weights.h5")
    with h5py.File(path, "r+") as f:
        f["layers/conv2d/vars"].attrs["name"] = np.arange(3)
    refused(path, "expected text")


def test_files_that_are_not_keras_weights(tmp_path: Path) -> None:
    (tmp_path / "empty.h5").write_bytes(b"")
    refused(tmp_path / "empty.h5", "empty")
    (tmp_path / "text.h5").write_text("not hdf5")
    refused(tmp_path / "text.h5", "not an HDF5 file")
    refused(tmp_path, "is a directory")
    refused(tmp_path / "missing.h5", "no such file")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["data"] = np.zeros(3)
    refused(tmp_path / "other.h5", "not a Keras weights file")
