"""Every blob encoding and net generation, built from a real model's weights.

The shared models cover V2, V1 and NVIDIA fp16; no V0 file, unpacked-float
file or double_data file was found in the wild at a testable size. These
tests re-encode the real LeNet weights in those encodings with a tiny test
encoder and check that the reader gives back exactly the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, DecodeError, InputFileError
from tests import protowriter as pw
from tests.conftest import models_dir


def _lenet() -> caffeport.Net:
    return caffeport.read(models_dir() / "caffe-reference" / "a_lenet" / "a_lenet.caffemodel")


def _write(tmp_path: Path, name: str, payload: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def _v2_layer(name: str, type_: str, blobs: list[bytes], extra: bytes = b"") -> bytes:
    return pw.ld(100, pw.string(1, name) + pw.string(2, type_) + extra + b"".join(pw.ld(7, b) for b in blobs))


@pytest.mark.parametrize(
    "encoding",
    [
        {"packed": False},
        {"double": True},
        {"double": True, "packed": False},
        {"fp16": True},
        {"legacy": True},
        {"legacy": True, "packed": False},
    ],
    ids=["unpacked-float", "double", "unpacked-double", "fp16", "legacy-dims", "legacy-unpacked"],
)
def test_blob_encodings_round_trip_real_weights(tmp_path: Path, encoding: dict[str, bool]) -> None:
    source = _lenet()
    layers = b"".join(
        _v2_layer(layer.name, layer.type, [pw.blob(np.asarray(b), **encoding) for b in layer.blobs])
        for layer in source
        if layer.blobs
    )
    net = caffeport.read(_write(tmp_path, "m.caffemodel", pw.string(1, "re-encoded") + layers))
    expected_dtype = np.float16 if encoding.get("fp16") else np.float64 if encoding.get("double") else np.float32
    for layer in net:
        original = source.layer(layer.name).blobs
        for got, want in zip(layer.blobs, original):
            assert got.dtype == expected_dtype
            want_values = np.asarray(want).astype(expected_dtype)
            if encoding.get("legacy"):
                assert got.ndim == 4 and got.size == want.size
            else:
                assert got.shape == want.shape
            np.testing.assert_array_equal(got.reshape(want.shape), want_values)
            assert not got.flags.writeable


def test_unpacked_blob_is_still_zero_copy(tmp_path: Path) -> None:
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    path = _write(tmp_path, "u.caffemodel", _v2_layer("fc", "InnerProduct", [pw.blob(array, packed=False)]))
    blob = caffeport.read(path).layer("fc").blobs[0]
    assert not blob.flags.owndata
    np.testing.assert_array_equal(blob, array)


def test_zero_dim_blob(tmp_path: Path) -> None:
    """A channel-shared PReLU slope is stored with an empty shape (c_deconv_prelu's prelu2)."""
    net = caffeport.read(models_dir() / "caffe-reference" / "c_deconv_prelu" / "c_deconv_prelu.caffemodel")
    assert net.layer("prelu2").blobs[0].shape == ()
    path = _write(tmp_path, "s.caffemodel", _v2_layer("p", "PReLU", [pw.blob(np.array(0.25, dtype=np.float32))]))
    assert caffeport.read(path).layer("p").blobs[0].item() == 0.25


def test_v0_net_is_upgraded(tmp_path: Path) -> None:
    """A V0 net: V1 'layers' entries wrapping old 'layer' messages, blobs in field 50, padding layers."""
    source = _lenet()
    conv1, ip1 = source.layer("conv1"), source.layer("ip1")

    def v0_entry(v0: bytes, bottom: str, top: str) -> bytes:
        return pw.ld(2, pw.ld(1, v0) + pw.string(2, bottom) + pw.string(3, top))

    pad = pw.string(1, "pad1") + pw.string(2, "padding") + pw.vint(7, 2)
    conv = (pw.string(1, "conv1") + pw.string(2, "conv") + pw.vint(3, 20) + pw.vint(8, 5) + pw.vint(10, 1)
            + b"".join(pw.ld(50, pw.blob(np.asarray(b), legacy=True)) for b in conv1.blobs))
    pool = pw.string(1, "pool1") + pw.string(2, "pool") + pw.vint(11, 1) + pw.vint(8, 2) + pw.vint(10, 2)
    ip = (pw.string(1, "ip1") + pw.string(2, "innerproduct") + pw.vint(3, 500)
          + b"".join(pw.ld(50, pw.blob(np.asarray(b), legacy=True)) for b in ip1.blobs))
    data = (pw.string(1, "v0net") + pw.string(3, "data") + b"".join(pw.vint(4, d) for d in (1, 1, 28, 28))
            + v0_entry(pad, "data", "pad1") + v0_entry(conv, "pad1", "conv1") + v0_entry(pool, "conv1", "pool1")
            + v0_entry(ip, "pool1", "ip1"))
    net = caffeport.read(_write(tmp_path, "v0.caffemodel", data))
    assert net.source_format == "V0"
    assert [(la.name, la.type) for la in net] == [
        ("conv1", "Convolution"), ("pool1", "Pooling"), ("ip1", "InnerProduct")
    ]
    conv_layer = net.layer("conv1")
    assert conv_layer.bottoms == ["data"]
    p = conv_layer.params["convolution_param"]
    assert (p["num_output"], p["kernel_size"], p["pad"], p["bias_term"]) == (20, [5], [2], True)
    assert net.layer("pool1").params["pooling_param"]["pool"] == "AVE"
    np.testing.assert_array_equal(conv_layer.blobs[0], conv1.blobs[0])
    np.testing.assert_array_equal(net.layer("ip1").blobs[0].reshape(500, 800), ip1.blobs[0])
    assert net.inputs == {"data": (1, 1, 28, 28)}
    # padding 2 keeps 28x28 through the 5x5 convolution: shape inference sees the folded pad
    assert conv_layer.top_shapes == [(1, 20, 28, 28)]


def test_truncated_file_names_file_and_offset(tmp_path: Path) -> None:
    data = (models_dir() / "caffe-reference" / "a_lenet" / "a_lenet.caffemodel").read_bytes()
    path = _write(tmp_path, "cut.caffemodel", data[: len(data) // 2])
    with pytest.raises(DecodeError) as info:
        caffeport.read(path)
    message = str(info.value)
    assert str(path) in message and "byte offset" in message
    assert info.value.offset is not None and 0 <= info.value.offset < len(data) // 2


def test_blob_count_mismatch_is_an_error(tmp_path: Path) -> None:
    bad = pw.ld(7, pw.vint(1, 3) + pw.vint(1, 4)) + pw.ld(5, np.zeros(11, "<f4").tobytes())
    path = _write(tmp_path, "bad.caffemodel", _v2_layer("fc", "InnerProduct", [bad]))
    with pytest.raises(DecodeError, match=r"holds 11 values but its shape \(3, 4\) needs 12") as info:
        caffeport.read(path)
    assert info.value.layer == "fc"


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x0b\x00", "wire type 3"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint longer than 10 bytes"),
        (b"\x00\x01", "field number 0"),
    ],
)
def test_malformed_wire_data(tmp_path: Path, payload: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        caffeport.read(_write(tmp_path, "m.caffemodel", payload))


def test_swapped_files_are_detected(models: Path) -> None:
    lenet = models / "caffe-reference" / "a_lenet"
    with pytest.raises(InputFileError, match="prototxt"):
        caffeport.read(lenet / "deploy.prototxt")
    with pytest.raises(InputFileError, match="binary"):
        caffeport.read(prototxt=lenet / "a_lenet.caffemodel")


def test_missing_empty_and_directory_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        caffeport.read(tmp_path / "nope.caffemodel")
    with pytest.raises(InputFileError, match="directory"):
        caffeport.read(tmp_path)
    with pytest.raises(InputFileError, match="empty"):
        caffeport.read(_write(tmp_path, "empty.caffemodel", b""))
    with pytest.raises(CaffeportError, match="nothing to read"):
        caffeport.read()
