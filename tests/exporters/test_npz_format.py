"""The npz format (caffeport/exporters/npz.py), checked with ``numpy.load``: no optional package needed.

Backend caffe gives every blob of `caffeport.read`, bit for bit, dtype kept; the other backends their weight names.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import ModelStructureError
from tests.exporters.format_helpers import (
    ODD_CHUNK_BYTES,
    REFERENCE,
    as_written,
    assert_widened_to_float32,
    convert_reference,
    duplicate_names_net,
    little_endian,
    odd_net,
    reference_files,
    same_bits,
    segfree_fp16,
    use_chunk_bytes,
    write_with,
)
from tests.proof.reference_nets import B_RESNET_EPS


@pytest.mark.parametrize("name", REFERENCE)
def test_npz_holds_every_caffe_blob_bit_for_bit(name: str, tmp_path: Path) -> None:
    out, result = convert_reference(name, tmp_path, "npz")
    assert result.backend == "caffe"
    original = caffeport.read(*reference_files(name))
    expected = {f"{layer.name}/{i}": blob for layer in original for i, blob in enumerate(layer.blobs)}
    with np.load(out) as z:
        assert sorted(z.files) == sorted([*expected, "__caffeport__"])
        for key, blob in expected.items():
            same_bits(z[key], blob, key)
        metadata = json.loads(str(z["__caffeport__"][()]))
        assert z["__caffeport__"].shape == () and z["__caffeport__"].dtype.kind == "U"
    assert metadata["backend"] == "caffe"
    assert metadata["source"]["caffemodel"] == str(reference_files(name)[0])


def test_npz_keeps_fp16_and_mixed_precision(tmp_path: Path) -> None:
    model = segfree_fp16()
    out = tmp_path / "segfree.npz"
    caffeport.convert(model, None, out, format="npz")
    original = caffeport.read(model)
    with np.load(out) as z:
        dtypes = set()
        for layer in original:
            for i, blob in enumerate(layer.blobs):
                same_bits(z[f"{layer.name}/{i}"], blob, f"{layer.name}/{i}")
                dtypes.add(z[f"{layer.name}/{i}"].dtype)
    assert dtypes == {np.dtype(np.float16), np.dtype(np.float32)}


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_npz_uses_the_backends_weight_names(backend: str, tmp_path: Path) -> None:
    out, result = convert_reference("b_resnet_block", tmp_path, "npz", backend)
    with np.load(out) as z:
        keys = set(z.files) - {"__caffeport__"}
        expected = {f"{la.name}/{w}": as_written(la, b)
                    for la in result.net for w, b in zip(la.weight_names, la.blobs)}
        assert keys == set(expected)
        for key, blob in expected.items():
            same_bits(z[key], blob, key)
        assert json.loads(str(z["__caffeport__"][()]))["batchnorm_eps"] == B_RESNET_EPS
    assert ("bn_conv0/gamma" if backend == "tensorflow" else "bn_conv0/weight") in keys


def test_npz_is_reproducible_and_stored_with_zip64(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first, _ = convert_reference("a_lenet", tmp_path / "1", "npz")
    second, _ = convert_reference("a_lenet", tmp_path / "2", "npz")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        assert "conv1/0.npy" in archive.namelist()


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_npz_fp16_weights_are_widened_once_a_backend_converts_them(backend: str, tmp_path: Path) -> None:
    """Transforms hand over fp16 views; frameworks get float32 throughout, widened exactly."""
    model = segfree_fp16()
    out = tmp_path / "segfree.npz"
    result = caffeport.convert(model, model.with_suffix(".prototxt"), out, format="npz", backend=backend)
    with np.load(out) as z:
        arrays = {k: z[k] for k in z.files if k != "__caffeport__"}
    assert_widened_to_float32(result, arrays)


@pytest.mark.parametrize("chunk_bytes", ODD_CHUNK_BYTES)
def test_npz_odd_blobs_round_trip(chunk_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chunk_bytes(monkeypatch, chunk_bytes)
    net = odd_net()
    with np.load(write_with(net, tmp_path / "odd.npz", "npz")) as z:
        npz = {key: z[key] for key in z.files}
    for i, blob in enumerate(net.layers[0].blobs):
        same_bits(npz[f"odd/{i}"], little_endian(blob), f"npz {i}")


def test_npz_refuses_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(ModelStructureError, match="'a'"):
        write_with(duplicate_names_net(), tmp_path / "dup.npz", "npz")
