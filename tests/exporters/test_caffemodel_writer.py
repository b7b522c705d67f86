"""The caffemodel writer: every real model survives write + read bit for bit.

The reader is the oracle for the round trips (it is tested on its own against
pycaffe's numbers); the wire-level tests walk the written bytes to check which
encoding each dtype gets, since a round trip alone cannot tell.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.codec.wire import Reader
from caffeport.errors import ModelStructureError, OutputError
from caffeport.exporters import caffe as writer
from caffeport.exporters.caffe import write_caffemodel, write_caffemodel_stream
from caffeport.ir import Layer, Net
from tests.conftest import SHARED_MODELS, models_dir


def _shared_caffemodels() -> list[str]:
    found = sorted(str(p.relative_to(SHARED_MODELS)) for p in SHARED_MODELS.glob("**/*.caffemodel"))
    return found or ["(no caffemodel found in the shared models)"]  # one failing case, never an empty skip


def _assert_same_net(original: Net, written: Net) -> None:
    assert written.source_format == "V2"
    assert written.name == original.name
    assert written.inputs == original.inputs
    assert [la.name for la in written] == [la.name for la in original]
    for a, b in zip(original, written):
        assert (b.type, b.bottoms, b.tops) == (a.type, a.bottoms, a.tops), a.name
        assert b.params == a.params, a.name
        assert len(b.blobs) == len(a.blobs), a.name
        for i, (x, y) in enumerate(zip(a.blobs, b.blobs)):
            assert (y.dtype, y.shape) == (x.dtype, x.shape), f"{a.name} blob {i}"
            assert y.tobytes() == x.tobytes(), f"{a.name} blob {i}: values differ"  # bit for bit, NaNs included


def _round_trip(net: Net, tmp_path: Path) -> Net:
    out = tmp_path / "written.caffemodel"
    write_caffemodel(net, out)
    return caffeport.read(out)


@pytest.mark.parametrize("model", _shared_caffemodels())
def test_every_shared_caffemodel_round_trips(model: str, tmp_path: Path) -> None:
    original = caffeport.read(models_dir() / model)
    _assert_same_net(original, _round_trip(original, tmp_path))


def test_v1_legacy_shapes_stay_four_dimensional(tmp_path: Path) -> None:
    """MANIFEST: lenet-v1 stores the IP weights as legacy dims 1x1x500x800."""
    written = _round_trip(caffeport.read(models_dir() / "lenet-v1" / "lenet_iter_10000.caffemodel"), tmp_path)
    assert [b.shape for b in written.layer("ip1").blobs] == [(1, 1, 500, 800), (1, 1, 1, 500)]


def test_fp16_blobs_stay_fp16(tmp_path: Path) -> None:
    original = caffeport.read(models_dir() / "hyperlpr-finemapping" / "fp16" / "HorizonalFinemapping.caffemodel")
    written = _round_trip(original, tmp_path)
    pairs = [(a, b) for la, lb in zip(original, written) for a, b in zip(la.blobs, lb.blobs)]
    assert len(pairs) == 8
    for a, b in pairs:
        assert a.dtype == b.dtype == np.float16
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))


def test_hdf5_snapshot_with_prototxt_round_trips(tmp_path: Path) -> None:
    root = models_dir() / "cifar10-quick-v2-hdf5"
    original = caffeport.read(root / "cifar10_quick_iter_5000.caffemodel.h5", root / "cifar10_quick.prototxt")
    assert original.source_format == "HDF5" and any(layer.blobs for layer in original)
    _assert_same_net(original, _round_trip(original, tmp_path))


# --------------------------------------------------------------------------
# Which encoding each dtype gets, seen on the wire


def _blob_fields(path: Path) -> list[dict[int, int]]:
    """For each blob in the file: field number -> its varint value (or payload length)."""
    reader = Reader(path.read_bytes())
    found = []
    for net_field in reader.fields(0, len(reader.buf)):
        if net_field.number != 100:
            continue
        for layer_field in reader.fields(net_field.start, net_field.end):
            if layer_field.number == 7:
                found.append({f.number: f.value for f in reader.fields(layer_field.start, layer_field.end)})
    return found


def _one_blob_net(blob: np.ndarray) -> Net:
    return Net(name="one", layers=[Layer(name="ip", type="InnerProduct", bottoms=["x"], tops=["y"], blobs=[blob])])


def test_float64_blob_is_written_as_double_data(tmp_path: Path) -> None:
    blob = np.random.default_rng(0).standard_normal((3, 5))
    path = tmp_path / "double.caffemodel"
    write_caffemodel(_one_blob_net(blob), path)
    assert _blob_fields(path) == [{7: 4, 8: 15 * 8}]  # shape (2 dims, packed: 4 bytes), double_data
    read = caffeport.read(path).layer("ip").blobs[0]
    assert read.dtype == np.float64
    assert read.tobytes() == blob.tobytes()


def test_float16_blob_is_written_as_raw_data(tmp_path: Path) -> None:
    blob = np.arange(6, dtype=np.float16).reshape(2, 3)
    path = tmp_path / "half.caffemodel"
    write_caffemodel(_one_blob_net(blob), path)
    assert _blob_fields(path) == [{7: 4, 10: 2, 12: 12}]  # raw_data_type FLOAT16, 6 x 2 bytes


def test_float32_blob_is_packed_data_then_shape(tmp_path: Path) -> None:
    path = tmp_path / "float.caffemodel"
    write_caffemodel(_one_blob_net(np.ones((2, 2), dtype=">f4")), path)  # big-endian input, little-endian file
    assert _blob_fields(path) == [{5: 16, 7: 4}]
    read = caffeport.read(path).layer("ip").blobs[0]
    assert read.dtype == np.dtype("<f4") and (read == 1).all()


def test_scalar_and_empty_blobs_keep_their_shapes(tmp_path: Path) -> None:
    blobs = [np.array(2.5, dtype=np.float32), np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float64)]
    net = Net(name="odd", layers=[Layer(name="p", type="Parameter", tops=["p"], blobs=blobs)])
    read = _round_trip(net, tmp_path).layer("p").blobs
    assert [(b.shape, b.dtype) for b in read] == [((), np.float32), ((0, 4), np.float32), ((0,), np.float64)]
    assert read[0].item() == 2.5


def test_non_contiguous_array_is_written_in_c_order(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    blob = base.transpose(2, 0, 1)
    read = _round_trip(_one_blob_net(blob), tmp_path).layer("ip").blobs[0]
    np.testing.assert_array_equal(read, blob)


# --------------------------------------------------------------------------
# Streaming


class _CountingBlob:
    """A LazyBlob that records the largest piece asked for."""

    def __init__(self, shape: tuple[int, ...], extra: int = 0) -> None:
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.extra = extra
        self.requests: list[int] = []
        self.sizes: list[int] = []

    def iter_chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        self.requests.append(max_elements)
        total = int(np.prod(self.shape)) + self.extra
        for start in range(0, total, max_elements):
            chunk = np.arange(start, min(total, start + max_elements), dtype=np.float32)
            self.sizes.append(chunk.size)
            yield chunk


def test_lazy_blobs_are_streamed_in_bounded_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "CHUNK_BYTES", 64)  # 16 float32 per piece
    lazy = _CountingBlob((10, 10))
    array = np.arange(100, dtype=np.float32).reshape(10, 10)
    layers = [Layer(name="lazy", type="InnerProduct", blobs=[lazy]), Layer(name="eager", type="Scale", blobs=[array])]
    handle = io.BytesIO()
    written = write_caffemodel_stream(handle, "stream", iter(layers))
    assert written == len(handle.getvalue())
    assert lazy.requests == [16] and max(lazy.sizes) == 16
    path = tmp_path / "stream.caffemodel"
    path.write_bytes(handle.getvalue())
    net = caffeport.read(path)
    assert net.name == "stream"
    for layer in net:
        assert layer.blobs[0].tobytes() == array.tobytes()


@pytest.mark.parametrize("extra", [-1, 1])
def test_lazy_blob_with_wrong_count_fails_and_leaves_nothing(tmp_path: Path, extra: int) -> None:
    net = Net(layers=[Layer(name="bad", type="InnerProduct", blobs=[_CountingBlob((3, 3), extra)])])
    with pytest.raises(ModelStructureError, match=r"'bad'.*needs 9"):
        write_caffemodel(net, tmp_path / "bad.caffemodel")
    assert list(tmp_path.iterdir()) == []


def test_unsupported_dtype_fails_naming_the_layer(tmp_path: Path) -> None:
    with pytest.raises(ModelStructureError, match=r"'ip'.*int8"):
        write_caffemodel(_one_blob_net(np.zeros(3, dtype=np.int8)), tmp_path / "x.caffemodel")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# Parameters and inputs


def test_params_unknown_to_the_schema_are_skipped(tmp_path: Path) -> None:
    layer = Layer(
        name="conv",
        type="Convolution",
        params={
            "convolution_param": {"num_output": 8, "kernel_size": [3], "engine": "CUDNN", "fork_field": 7},
            "my_fork_param": {"x": 1},
        },
    )
    read = _round_trip(Net(layers=[layer]), tmp_path).layer("conv")
    assert set(read.params) == {"convolution_param"}
    conv = read.params["convolution_param"]
    assert (conv["num_output"], conv["kernel_size"], conv["engine"]) == (8, [3], "CUDNN")
    assert "fork_field" not in conv


def test_a_value_a_field_cannot_hold_fails_naming_it(tmp_path: Path) -> None:
    layer = Layer(name="conv", type="Convolution", params={"convolution_param": {"pad": [-1]}})
    with pytest.raises(ModelStructureError, match=r"'conv'.*convolution_param: ConvolutionParameter\.pad"):
        write_caffemodel(Net(layers=[layer]), tmp_path / "x.caffemodel")


def test_negative_and_signed_values_round_trip(tmp_path: Path) -> None:
    params = {
        "inner_product_param": {"num_output": 4, "axis": -1},
        "reshape_param": {"shape": {"dim": [0, -1, 2]}},
        "elu_param": {"alpha": 0.25},
    }
    layer = Layer(name="l", type="InnerProduct", params=params)
    read = _round_trip(Net(layers=[layer]), tmp_path).layer("l").params
    assert read["inner_product_param"]["axis"] == -1
    assert read["reshape_param"]["shape"]["dim"] == [0, -1, 2]
    assert read["elu_param"]["alpha"] == 0.25


def test_net_inputs_are_written_only_without_input_layers(tmp_path: Path) -> None:
    relu = Layer(name="relu", type="ReLU", bottoms=["data"], tops=["out"])
    legacy = Net(name="legacy", layers=[relu], inputs={"data": (1, 3, 8, 8)})
    assert _round_trip(legacy, tmp_path).inputs == {"data": (1, 3, 8, 8)}
    input_layer = Layer(name="data", type="Input", tops=["data"],
                        params={"input_param": {"shape": [{"dim": [1, 3, 8, 8]}]}})
    with_layer = Net(name="modern", layers=[input_layer, relu], inputs={"data": (1, 3, 8, 8)})
    out = tmp_path / "modern.caffemodel"
    write_caffemodel(with_layer, out)
    assert all(f.number not in (3, 8) for f in Reader(out.read_bytes()).fields(0, out.stat().st_size))
    assert caffeport.read(out).inputs == {"data": (1, 3, 8, 8)}


# --------------------------------------------------------------------------
# Output safety


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = tmp_path / "a.caffemodel"
    out.write_bytes(b"keep me")
    net = _one_blob_net(np.ones(2, dtype=np.float32))
    with pytest.raises(OutputError, match="already exists"):
        write_caffemodel(net, out)
    assert out.read_bytes() == b"keep me"
    write_caffemodel(net, out, force=True)
    assert caffeport.read(out).layer("ip").blobs[0].tolist() == [1.0, 1.0]


def test_refuses_to_write_over_the_file_the_blobs_come_from(tmp_path: Path) -> None:
    source = tmp_path / "src.caffemodel"
    write_caffemodel(_one_blob_net(np.ones(2, dtype=np.float32)), source)
    net = caffeport.read(source)
    with pytest.raises(OutputError, match="input file"):
        write_caffemodel(net, source, force=True)
