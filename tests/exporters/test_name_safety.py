"""Raw Caffe names (backend caffe) can never escape their place in an output file."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.errors import ModelStructureError
from caffeport.exporters import ExportOptions, load_exporters
from caffeport.ir import Layer, Net
from tests.conftest import models_dir


def _net(*names: str) -> Net:
    blob = [np.arange(4, dtype=np.float32).reshape(2, 2)]
    return Net(layers=[Layer(n, "Mystery", ["x"], ["y"], blobs=list(blob)) for n in names])


@pytest.mark.parametrize("fmt", ["npz", "keras-h5"])
def test_hostile_names_stay_inside_the_file(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"w.{fmt}"
    load_exporters()[fmt].write(_net("../../x", "/abs", "a\x00b"), out, ExportOptions())
    if fmt == "npz":
        members = zipfile.ZipFile(out).namelist()
        assert all(not m.startswith("/") and ".." not in m.split("/") and "\x00" not in m for m in members)
    else:
        with h5py.File(out, "r") as f:
            assert sorted(f) == [".._.._x", "_abs", "a_b"]  # one group each, at the root
            assert all(list(f[k]) == [k] for k in f)  # each holding only its own weights
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_names_that_collide_once_made_safe_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelStructureError, match="both become"):
        load_exporters()["npz"].write(_net("a/b", "a_b"), tmp_path / "w.npz", ExportOptions())


def test_scalar_blob_with_the_raw_backend(tmp_path: Path) -> None:
    """c_deconv_prelu's channel-shared PReLU slope is a 0-d blob: HDF5 gives it no byte range of its own."""
    folder = models_dir() / "caffe-reference" / "c_deconv_prelu"
    caffeport.convert(folder / "c_deconv_prelu.caffemodel", output=tmp_path / "w.h5", backend="caffe")
    net = caffeport.read(folder / "c_deconv_prelu.caffemodel")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        assert f["prelu2"]["prelu2/0:0"][()] == net.layer("prelu2").blobs[0].item()
