"""Files built to break the readers: each malformation gives its own clean error, or a warning.

Every case is a file a user could download: wrong lengths and counts, bad
varints and wire types, shapes that disagree with their data or overflow,
NaN weights, duplicate names, non-UTF-8 names, the wrong kind of file, and
HDF5 snapshots that are corrupt or point outside themselves. Reading must
raise the specific `CaffeportError` subclass (naming file, layer and byte
offset where they apply) or warn, never crash, hang or allocate what the
file does not justify (measured with tracemalloc, which sees numpy's
allocations too).
"""

from __future__ import annotations

import os
import re
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.errors import (
    CaffeportError,
    DecodeError,
    InputFileError,
    InternalDecodeError,
    ModelStructureError,
    PrototxtSyntaxError,
)
from caffeport.readers import blob_proto, hdf5_snapshot, prototxt
from tests import protowriter as pw
from tests.conftest import models_dir
from tests.hostile.hostile_helpers import hang_guard


def _write(tmp_path: Path, name: str, payload: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(payload.encode() if isinstance(payload, str) else payload)
    return path


def _layer(name: str | bytes, type_: str = "InnerProduct", blobs: list[bytes] = (), extra: bytes = b"") -> bytes:
    raw_name = name.encode() if isinstance(name, str) else name
    return pw.ld(100, pw.ld(1, raw_name) + pw.string(2, type_) + extra + b"".join(pw.ld(7, b) for b in blobs))


def _model(tmp_path: Path, *layers: bytes, name: str = "m.caffemodel") -> Path:
    return _write(tmp_path, name, pw.string(1, "hostile") + b"".join(layers))


def _read_error(path: Path, kind: type[CaffeportError] = DecodeError, **read_kwargs: Any) -> CaffeportError:
    """The error reading ``path`` gives: of class ``kind``, never the guard's, naming the file."""
    with hang_guard(), pytest.raises(kind) as info:
        caffeport.read(path, **read_kwargs)
    assert not isinstance(info.value, InternalDecodeError), repr(info.value.__cause__)
    assert str(path) in str(info.value)
    return info.value


def _shape(*dims: int) -> bytes:
    return pw.ld(7, b"".join(pw.vint(1, d) for d in dims))


def _floats(values: Any) -> bytes:
    return pw.ld(5, np.asarray(values, dtype="<f4").tobytes())


@contextmanager
def allocation_limit(limit_bytes: int) -> Iterator[None]:
    """Fail if the block's peak traced allocation (Python objects and numpy buffers) passes ``limit_bytes``."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= limit_bytes, f"peak allocation {peak / 1e6:.1f} MB > {limit_bytes / 1e6:.1f} MB"


# --------------------------------------------------------------------------
# Wire format


@pytest.mark.parametrize("where", ["top", "layer", "blob", "param"])
def test_varint_longer_than_10_bytes(tmp_path: Path, where: str) -> None:
    long_varint = b"\xff" * 10 + b"\x01"
    if where == "top":
        payload = pw.key(4, 0) + long_varint
    elif where == "layer":
        payload = pw.ld(100, pw.string(1, "fc") + pw.key(3, 2) + long_varint)
    elif where == "blob":
        payload = _layer("fc", blobs=[pw.key(1, 0) + long_varint])
    else:
        payload = _layer("fc", extra=pw.ld(117, pw.key(1, 0) + long_varint))  # inner_product_param.num_output
    error = _read_error(_write(tmp_path, "m.caffemodel", payload))
    assert "longer than 10 bytes" in error.message and error.offset is not None


def test_ten_byte_varints_keep_64_bits(tmp_path: Path) -> None:
    """Protobuf drops bits past the 64th; so does the reader (no 70-bit dimensions reach anything)."""
    huge = b"\xff" * 9 + b"\x7f"
    blob = pw.ld(7, pw.key(1, 0) + huge) + _floats([1.0])
    error = _read_error(_model(tmp_path, _layer("fc", blobs=[blob])))
    assert "negative dimension" in error.message and error.layer == "fc"


@pytest.mark.parametrize("wire_type", [3, 4, 6, 7])
@pytest.mark.parametrize("where", ["top", "layer", "blob", "param"])
def test_wire_types_caffe_never_writes(tmp_path: Path, wire_type: int, where: str) -> None:
    bad = pw.key(9, wire_type) + b"\x00"
    payload = {
        "top": bad,
        "layer": pw.ld(100, pw.string(1, "fc") + bad),
        "blob": _layer("fc", blobs=[bad]),
        "param": _layer("fc", extra=pw.ld(117, bad)),
    }[where]
    error = _read_error(_model(tmp_path, payload))
    assert f"wire type {wire_type}" in error.message
    assert error.offset is not None and error.offset > 0


@pytest.mark.parametrize("number", [0, 2**29, 2**40])
def test_invalid_field_numbers(tmp_path: Path, number: int) -> None:
    for payload in (pw.varint(number << 3) + b"\x00", _layer("fc", blobs=[pw.varint(number << 3) + b"\x00"])):
        error = _read_error(_model(tmp_path, payload))
        assert f"field number {number}" in error.message


@pytest.mark.parametrize("level", ["layer", "blob", "data", "shape", "param"])
def test_lengths_beyond_their_message(tmp_path: Path, level: str) -> None:
    """A length that runs past its enclosing message, at every nesting level, before anything is read."""
    overlong = {
        "layer": pw.key(100, 2) + pw.varint(2**40) + b"x",
        "blob": pw.ld(100, pw.string(1, "fc") + pw.key(7, 2) + pw.varint(1000) + b"x"),
        "data": _layer("fc", blobs=[_shape(2) + pw.key(5, 2) + pw.varint(2**62)]),
        "shape": _layer("fc", blobs=[pw.key(7, 2) + pw.varint(50) + pw.vint(1, 2)]),
        "param": _layer("fc", extra=pw.key(117, 2) + pw.varint(2**63)),
    }[level]
    error = _read_error(_model(tmp_path, overlong))
    assert "claims" in error.message and "remain" in error.message
    assert error.offset is not None


# --------------------------------------------------------------------------
# Blobs


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (_shape(3, 4) + _floats(np.zeros(11)), r"holds 11 values but its shape \(3, 4\) needs 12"),
        (_shape(2, 2) + pw.ld(8, np.zeros(5).tobytes()), r"holds 5 values but its shape \(2, 2\) needs 4"),
        (_shape(3) + pw.vint(10, 2) + pw.ld(12, np.zeros(4, "<f2").tobytes()), r"holds 4 values"),
        (_shape(3, -2) + _floats(np.zeros(6)), "negative dimension"),
        (pw.vint(1, -1) + pw.vint(2, 1) + _floats(np.zeros(1)), "negative dimension"),
        (_shape(2**62, 2**62) + _floats([1.0]), "astronomically large"),
        (_shape(0, 2**62, 2**62), "astronomically large"),
        (_shape(0, 2**63 - 1), "astronomically large"),
        (_shape(*([2**40] * 20)), "astronomically large"),
        (_shape(*([1] * 33)) + _floats([1.0]), "more than 32 axes"),
        (_shape(2) + pw.vint(10, 7) + pw.ld(12, b"\0" * 8), "raw_data_type 7"),
        (_shape(2) + pw.vint(10, 1) + pw.ld(12, b"\0" * 7), "not a whole number"),
        (_shape(2) + pw.ld(5, b"\0" * 7), "not a whole number"),
        (_shape(2) + pw.key(5, 5) + b"\0\0", "truncated"),
    ],
    ids=["count", "double-count", "fp16-count", "negative", "negative-legacy", "overflow", "zero-times-huge",
         "zero-times-int64-max", "product-overflow", "too-many-axes", "raw-type", "raw-size", "packed-size",
         "unpacked-truncated"],
)
def test_blob_shape_and_data_checked_before_any_array(tmp_path: Path, blob: bytes, match: str) -> None:
    path = _model(tmp_path, _layer("ip", blobs=[blob]))
    with allocation_limit(10_000_000):
        error = _read_error(path)
    assert error.layer == "ip" and error.offset is not None
    assert re.search(match, error.message), error.message


def test_blob_split_into_many_chunks_is_joined_without_per_chunk_memory(tmp_path: Path) -> None:
    """Protobuf allows a repeated field in any number of pieces; 200,000 one-float pieces cost ~1 MB, not 20."""
    values = np.arange(200_000, dtype="<f4")
    blob = _shape(values.size) + b"".join(pw.ld(5, v.tobytes()) for v in values)
    path = _model(tmp_path, _layer("ip", blobs=[blob]))
    with allocation_limit(16_000_000):
        net = caffeport.read(path)
    np.testing.assert_array_equal(net.layer("ip").blobs[0], values)


def test_unpacked_float_behind_an_overlong_tag(tmp_path: Path) -> None:
    """``data`` unpacked with a two-byte tag encoding (valid protobuf): read as a value, not a format error."""
    tag = bytes([0x2D | 0x80, 0x00])
    blob = _shape(2) + tag + struct.pack("<f", 1.5) + pw.f32(5, 2.5)
    net = caffeport.read(_model(tmp_path, _layer("ip", blobs=[blob])))
    assert net.layer("ip").blobs[0].tolist() == [1.5, 2.5]


@pytest.mark.parametrize("scan", ["serial", "parallel blocks"])
def test_nan_and_inf_weights_are_kept_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan: str) -> None:
    if scan == "parallel blocks":  # what a large model gets: blocks of every blob shared by two threads
        monkeypatch.setattr(blob_proto, "_PARALLEL_SCAN_BYTES", 0)
        monkeypatch.setattr(blob_proto, "_SCAN_BLOCK", 1)
    weights = np.array([[1.0, np.nan], [np.inf, -np.inf]], dtype=np.float32)
    path = _model(tmp_path, _layer("ok", blobs=[pw.blob(np.ones(3, np.float32))]),
                  _layer("bad", blobs=[pw.blob(np.zeros(2, np.float32)), pw.blob(weights)]),
                  _layer("half", blobs=[pw.blob(np.array([np.nan, 1], np.float32), fp16=True)]),
                  _layer("double", blobs=[pw.blob(np.array([1e308, 1e308, np.nan]), double=True)]))
    net = caffeport.read(path)
    bad = [w for w in net.warnings if "NaN" in w or "infinite" in w]
    assert bad == [
        "layer 'bad' blob 1 (2, 2) holds 1 NaN and 2 infinite values (kept as stored)",
        "layer 'half' blob 0 (2,) holds 1 NaN values (kept as stored)",
        "layer 'double' blob 0 (3,) holds 1 NaN values (kept as stored)",
    ]
    np.testing.assert_array_equal(net.layer("bad").blobs[1], weights)


def test_convert_reports_nan_weights_checked_beside_the_export(tmp_path: Path) -> None:
    """`convert` reads without the check and runs it while writing: the same warning, after the reader's own."""
    weights = np.array([1.0, np.nan, np.inf], dtype=np.float32)
    path = _model(tmp_path, _layer("bad", type_="Bias", blobs=[pw.blob(weights)]))
    result = caffeport.convert(path, output=tmp_path / "out.npz", format="npz")
    unchecked = caffeport.read(path, check_values=False).warnings
    assert unchecked and not [w for w in unchecked if "NaN" in w]
    assert result.warnings[:len(unchecked) + 1] == [
        *unchecked, "layer 'bad' blob 0 (3,) holds 1 NaN and 1 infinite values (kept as stored)"]
    with np.load(tmp_path / "out.npz") as stored:
        np.testing.assert_array_equal(stored["bad/0"], weights)


def test_a_stopped_scan_skips_the_remaining_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """What lets an interrupted conversion end without waiting for the NaN/Inf scan of the whole model."""
    monkeypatch.setattr(blob_proto, "_SCAN_BLOCK", 2)
    arrays = [np.array([np.nan, 1, np.inf, np.nan], np.float32)]
    assert blob_proto.nonfinite_counts(arrays, threads=1) == [(2, 1)]
    stop = threading.Event()
    stop.set()
    assert blob_proto.nonfinite_counts(arrays, threads=1, stop=stop) == [(0, 0)]


def test_finite_large_values_are_not_reported(tmp_path: Path) -> None:
    """A sum that overflows float32 is not a NaN: the exact count clears it."""
    big = np.full(1000, 3e38, dtype=np.float32)
    net = caffeport.read(_model(tmp_path, _layer("big", blobs=[pw.blob(big)])))
    assert not [w for w in net.warnings if "NaN" in w or "infinite" in w]


# --------------------------------------------------------------------------
# Names and layers


def test_duplicate_layer_names_warn(tmp_path: Path) -> None:
    blob = pw.blob(np.ones(2, np.float32))
    net = caffeport.read(_model(tmp_path, _layer("fc", blobs=[blob]), _layer("fc", blobs=[blob]), _layer("x")))
    assert "2 layers are named 'fc': weights are matched by name, so only one can get them" in net.warnings
    text = _write(tmp_path, "d.prototxt", 'layer { name: "a" type: "ReLU" } layer { name: "a" type: "ReLU" }')
    assert any("2 layers are named 'a'" in w for w in caffeport.read(prototxt=text).warnings)


def test_non_utf8_names_name_the_byte_offset(tmp_path: Path) -> None:
    payload = pw.string(1, "n") + _layer(b"conv\xff1")
    error = _read_error(_write(tmp_path, "m.caffemodel", payload))
    assert "not valid UTF-8" in error.message and error.offset == payload.index(b"\xff")
    bad_text = _write(tmp_path, "p.prototxt", b'layer { name: "conv\xff" type: "ReLU" }')
    with pytest.raises(InputFileError, match="binary file"):  # not UTF-8 text at all
        caffeport.read(prototxt=bad_text)
    late = _write(tmp_path, "l.prototxt", b"# comment\n" * 60 + b'layer { name: "conv\xff" type: "ReLU" }')
    with pytest.raises(PrototxtSyntaxError, match="UTF-8") as info:
        caffeport.read(prototxt=late)
    assert (info.value.line, info.value.offset) == (61, 600 + len(b'layer { name: "conv'))
    escaped = _write(tmp_path, "q.prototxt", b'layer { name: "conv\\377" type: "ReLU" }')
    with pytest.raises(PrototxtSyntaxError, match="UTF-8"):
        caffeport.read(prototxt=escaped)


def test_object_budget_refuses_millions_of_empty_layers(tmp_path: Path) -> None:
    """3 bytes per empty layer would otherwise cost ~1 KB each in Python: 1 MB of file, ~350 MB of memory."""
    path = _write(tmp_path, "many.caffemodel", pw.ld(100, b"") * 350_000)
    with allocation_limit(250_000_000):
        error = _read_error(path)
    assert "far more than any real net" in error.message


def test_object_budget_counts_names_values_blobs_and_layers(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kept object counts (scaled down 100x here: the real budget takes ~30 s of decoding to exhaust)."""
    monkeypatch.setattr(caffeport.codec.wire, "MAX_OBJECTS", 20_000)
    many = {
        "names": pw.ld(100, pw.string(1, "ab") + b"".join(pw.string(3, f"{i:02d}") for i in range(100))) * 300,
        "values": _layer("c", extra=pw.ld(106, pw.ld(1, pw.varint(1) * 25_000))),  # convolution_param.pad
        "floats": _layer("t", extra=pw.ld(100, pw.ld(5, np.zeros(25_000, "<f4").tobytes()))),  # mean_value
        "blobs": _layer("b", blobs=[_shape(0)] * 6_000),
        "layers": pw.ld(100, b"") * 2_000,
        "dims": pw.ld(4, pw.varint(1) * 25_000),
    }
    for what, payload in many.items():
        error = _read_error(_model(tmp_path, payload, name=f"{what}.caffemodel"))
        assert "far more than any real net" in error.message, what


def test_many_v0_padding_layers_fold_in_linear_time(tmp_path: Path) -> None:
    n = 20_000
    lines = ["input: 'data' input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8"]
    previous = "data"
    for i in range(n):
        lines.append(f"layers {{ layer {{ name: 'pad{i}' type: 'padding' pad: 1 }} bottom: '{previous}' "
                     f"top: 'pad{i}' }}")
        lines.append(f"layers {{ layer {{ name: 'conv{i}' type: 'conv' num_output: 1 kernelsize: 1 }} "
                     f"bottom: 'pad{i}' top: 'conv{i}' }}")
        previous = f"conv{i}"
    path = _write(tmp_path, "v0.prototxt", "\n".join(lines))
    with hang_guard():
        net = caffeport.read(prototxt=path)
    assert len(net.layers) == n and net.layers[-1].bottoms == [f"conv{n - 2}"]


@pytest.mark.parametrize(
    "text",
    [
        "input: 'x' input_dim: abc input_dim: 1 input_dim: 1 input_dim: 1",
        "input: 'x' input_dim: 1e999 input_dim: 1 input_dim: 1 input_dim: 1",
        "input: 'x' input_dim: nan input_dim: 1 input_dim: 1 input_dim: 1",
        "input: 'x' input_dim { } input_dim: 1 input_dim: 1 input_dim: 1",
        "input: 'x' input_dim: 99999999999999999999999 input_dim: 1 input_dim: 1 input_dim: 1",
        "input: 'x' input_shape: 3",
        "input: 'x' input_shape { dim: -99999999999999999999 }",
        "input { } input_dim: 1",
        "name { } layer { name: 'a' type: 'ReLU' }",
        "layer { name { } type: 'ReLU' }",
        "layer { name: 'a' type { } }",
        "layer { name: 'a' type: 'ReLU' bottom { } }",
        "layer { name: 'a' type: 'ReLU' include { min_level: nan } }",
        "layer { name: 'a' type: 'ReLU' exclude { max_level: 'x' } }",
        "layer { name: 'a' type: 'ReLU' include { phase { } } }",
        "layers { layer: 5 }",
        "layers { layer { name: 'p' type: 'padding' pad { } } bottom: 'd' top: 'p' }"
        " layers { layer { name: 'c' type: 'conv' } bottom: 'p' top: 'c' }",
        "layers { layer { name: 'p' type: 'padding' pad: -3 } bottom: 'd' top: 'p' }"
        " layers { layer { name: 'c' type: 'conv' } bottom: 'p' top: 'c' }",
        "layer { name: 'a' type: 'Convolution' convolution_param: 5 }",
        "layer { name: 'a' type: 'Convolution' convolution_param { num_output: -1 } }",
    ],
)
def test_prototxt_values_of_the_wrong_kind(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "p.prototxt", text)
    with hang_guard(), pytest.raises(CaffeportError) as info:
        caffeport.read(prototxt=path)
    error = info.value
    assert isinstance(error, (ModelStructureError, PrototxtSyntaxError)), repr(error)
    assert str(path) in str(error)


def test_oversized_prototxt_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.prototxt"
    with open(path, "wb") as handle:
        handle.write(b"name: 'x'\n" + b"layer { name: 'a' type: 'ReLU' }\n" * 40)
        handle.truncate(prototxt.MAX_PROTOTXT_BYTES + 1)  # sparse: costs no disk
    with allocation_limit(5_000_000), pytest.raises(InputFileError, match="too large for a net prototxt"):
        caffeport.read(prototxt=path)


# --------------------------------------------------------------------------
# The wrong file, or none


def test_wrong_kind_of_file_and_no_file(tmp_path: Path) -> None:
    lenet = models_dir() / "caffe-reference" / "a_lenet"
    empty = _write(tmp_path, "empty.caffemodel", b"")
    fifo = tmp_path / "pipe.caffemodel"
    os.mkfifo(fifo)
    for args, kind, match in [
        ((lenet / "deploy.prototxt",), InputFileError, "text file"),
        ((None, lenet / "a_lenet.caffemodel"), InputFileError, "binary file"),
        ((tmp_path / "missing.caffemodel",), InputFileError, "no such file"),
        ((tmp_path,), InputFileError, "directory"),
        ((empty,), InputFileError, "empty"),
        ((fifo,), InputFileError, "not a regular file"),
        ((None, tmp_path / "missing.prototxt"), InputFileError, "no such file"),
        ((None, tmp_path), InputFileError, "directory"),
        ((None, empty), InputFileError, "empty"),
        ((str(tmp_path / "nul\0.caffemodel"),), InputFileError, "cannot open"),
        ((str(tmp_path / ("x" * 5000)),), InputFileError, "cannot open"),
    ]:
        with hang_guard(), pytest.raises(kind, match=match):
            caffeport.read(*args)


@pytest.mark.parametrize("source", ["a_lenet/a_lenet.caffemodel", "a_lenet_v1/a_lenet_v1.caffemodel"])
def test_read_blob_given_a_caffemodel(source: str) -> None:
    with pytest.raises(InputFileError, match=r"not a BlobProto.*caffemodel"):
        caffeport.read_blob(models_dir() / "caffe-reference" / source)


def test_read_blob_given_other_files(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="text file"):
        caffeport.read_blob(models_dir() / "caffe-reference" / "a_lenet" / "deploy.prototxt")
    with pytest.raises(InputFileError, match="hdf5"):
        caffeport.read_blob(next(models_dir().rglob("*.caffemodel.h5")))
    with pytest.raises(DecodeError, match="holds no values"):
        caffeport.read_blob(_write(tmp_path, "e.binaryproto", _shape(0) + _floats([])))


def test_read_blob_and_read_given_random_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for i in range(3000):
        data = rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        path = _write(tmp_path, f"r{i % 2}.bin", data)
        for read in (caffeport.read_blob, caffeport.read):
            try:
                read(path)
            except InternalDecodeError as exc:
                pytest.fail(f"{data!r}: {exc!r} from {exc.__cause__!r}")
            except CaffeportError:
                pass


def test_entry_guard_turns_a_missed_check_into_an_error_naming_the_file(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: Any) -> None:
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setitem(caffeport.readers.WEIGHTS_READERS, "binary", broken)
    path = _model(tmp_path, _layer("fc"))
    with pytest.raises(InternalDecodeError, match="please report") as info:
        caffeport.read(path)
    assert info.value.path == str(path) and isinstance(info.value.__cause__, struct.error)
    assert isinstance(info.value, DecodeError)


# --------------------------------------------------------------------------
# HDF5 snapshots


def _snapshot(path: Path, build: Callable[[h5py.Group], None] | None = None) -> Path:
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        conv = data.create_group("conv")
        conv["0"] = np.arange(77, dtype=np.float32).reshape(7, 11)
        conv["1"] = np.ones(7, dtype=np.float32)
        if build is not None:
            build(data)
    return path


def test_valid_snapshot_reads_as_a_view(tmp_path: Path) -> None:
    net = caffeport.read(_snapshot(tmp_path / "ok.caffemodel.h5"))
    blob = net.layer("conv").blobs[0]
    assert blob.shape == (7, 11) and not blob.flags.owndata and blob[6, 10] == 76


def test_snapshot_dataset_beyond_the_end_of_the_file(tmp_path: Path) -> None:
    """Dimensions patched to claim 100,000x more data than the file holds: refused before any view is made."""
    path = _snapshot(tmp_path / "big.caffemodel.h5")
    data = bytearray(path.read_bytes())
    dims = struct.pack("<QQ", 7, 11)
    assert data.count(dims) >= 1
    data = bytearray(data.replace(dims, struct.pack("<QQ", 7, 1_100_000)))
    path.write_bytes(bytes(data))
    with allocation_limit(10_000_000):
        error = _read_error(path)
    assert error.layer == "conv"
    assert "file has only" in error.message or "corrupt HDF5" in error.message


def test_corrupt_snapshot_bytes(tmp_path: Path) -> None:
    good = _snapshot(tmp_path / "good.caffemodel.h5").read_bytes()
    rng = np.random.default_rng(0)
    for i in range(300):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(8, len(data)))] = int(rng.integers(0, 256))
        path = _write(tmp_path, f"c{i % 2}.caffemodel.h5", bytes(data))
        try:
            with hang_guard():
                caffeport.read(path)
        except InternalDecodeError as exc:
            pytest.fail(f"flip {i}: {exc!r} from {exc.__cause__!r}")
        except CaffeportError:
            pass
    garbage = _write(tmp_path, "g.caffemodel.h5", b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    _read_error(garbage, CaffeportError)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda d: d.__setitem__("soft", h5py.SoftLink("/data/conv")), "SoftLink"),
        (lambda d: d.__setitem__("ext", h5py.ExternalLink("/etc/passwd", "/x")), "ExternalLink"),
        (lambda d: d["conv"].__setitem__("2", h5py.SoftLink("/data/conv/0")), "SoftLink"),
        (lambda d: d["conv"].create_dataset("2", shape=(3,), dtype="f4", external=[("/etc/hostname", 0, 12)]),
         "external or virtual"),
        (lambda d: d["conv"].create_dataset("2", shape=(50_000_000,), dtype="f4", chunks=(100_000,),
                                            compression="gzip"), "stores only"),
        (lambda d: d["conv"].create_dataset("2", shape=(10, 10), dtype="f4", chunks=(10, 10), maxshape=(None, None),
                                            compression="gzip", data=np.zeros((10, 10), "f4")).resize((1, 1)),
         None),
        (lambda d: d["conv"].create_dataset("2", data=np.arange(3, dtype=np.int32)), "expected float16"),
        (lambda d: d["conv"].create_dataset("2", data=np.zeros(3, dtype=np.complex64)), "expected float16"),
        (lambda d: d["conv"].create_dataset("2", shape=None, dtype="f4"), "null dataset"),
        (lambda d: d["conv"].create_dataset("\u00b2", data=np.zeros(2, "f4")), "not named by its index"),
        (lambda d: d["conv"].create_dataset("9" * 5000, data=np.zeros(2, "f4")), "not named by its index"),
        (lambda d: h5py.h5g.create(d.id, b"bad\xff"), "not valid UTF-8"),
        (lambda d: d.create_dataset("loose", data=np.zeros(2, "f4")), "not a group of blobs"),
        (lambda d: d["conv"].create_group("2"), "not a dataset"),
    ],
    ids=["soft-link", "external-link", "soft-link-blob", "external-storage", "compression-bomb", "tiny-chunked",
         "int-dtype", "complex", "null-dataspace", "unicode-digit", "long-index", "non-utf8", "loose-dataset",
         "group-blob"],
)
def test_snapshot_features_caffe_never_writes(tmp_path: Path, build: Callable[[h5py.Group], None],
                                              match: str | None) -> None:
    path = _snapshot(tmp_path / "s.caffemodel.h5", build)
    with allocation_limit(20_000_000):
        if match is None:  # allowed (a small chunked dataset), read through h5py
            assert caffeport.read(path).layer("conv").blobs[2].shape == (1, 1)
            return
        error = _read_error(path, CaffeportError)
    assert match in error.message, error.message


def test_snapshot_limits_are_the_documented_ones() -> None:
    assert hdf5_snapshot._MAX_EXPANSION == 16 and hdf5_snapshot._SMALL_BYTES == 1 << 20
