"""The ir format (caffeport/exporters/ir.py, read by caffeport/ir/file.py), checked with msgpack.

`load_ir` gives back every caffemodel of the shared models, and converted nets, exactly; the file is plain
msgpack in the documented layout; what `load_ir` cannot read is refused with a clear error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, DecodeError, InputFileError, ModelStructureError
from caffeport.ir import Conversion, Layer, MatchReport, Net, ReportEntry
from caffeport.ir.file import IR_KEY, IR_VERSION, load_ir
from tests.conftest import SHARED_MODELS, models_dir
from tests.exporters.format_helpers import (
    ODD_CHUNK_BYTES,
    REFERENCE,
    convert_reference,
    little_endian,
    odd_net,
    reference_files,
    same_bits,
    use_chunk_bytes,
    write_with,
)


def _shared_caffemodels() -> list[str]:
    found = sorted({str(p.relative_to(SHARED_MODELS)) for pattern in ("**/*.caffemodel", "**/*.caffemodel.h5")
                    for p in SHARED_MODELS.glob(pattern)})
    return found or ["(no caffemodel found in the shared models)"]  # one failing case, never an empty skip


def _assert_same_ir(got: Net, want: Net) -> None:
    for attribute in ("name", "source_format", "inputs", "caffemodel_path", "prototxt_path", "match", "warnings",
                      "report", "conversion"):
        assert getattr(got, attribute) == getattr(want, attribute), attribute
    assert [la.name for la in got] == [la.name for la in want]
    for a, b in zip(want, got):
        for attribute in ("type", "bottoms", "tops", "params", "bottom_shapes", "top_shapes", "weight_names",
                          "framework_class"):
            assert getattr(b, attribute) == getattr(a, attribute), f"{a.name}: {attribute}"
        assert len(b.blobs) == len(a.blobs), a.name
        for i, (x, y) in enumerate(zip(a.blobs, b.blobs)):
            same_bits(y, x, f"{a.name} blob {i}")  # bit for bit, NaNs included


@pytest.mark.parametrize("model", _shared_caffemodels())
def test_ir_round_trips_every_shared_caffemodel(model: str, tmp_path: Path) -> None:
    path = models_dir() / model
    out = tmp_path / "net.ir"
    caffeport.convert(path, None, out, format="ir")
    original = caffeport.read(path)
    original.conversion.backend = "caffe"  # the (identity) backend the conversion records
    _assert_same_ir(load_ir(out), original)


@pytest.mark.parametrize("backend", ["caffe", "tensorflow", "torch"])
@pytest.mark.parametrize("name", REFERENCE)
def test_ir_round_trips_converted_nets(name: str, backend: str, tmp_path: Path) -> None:
    out, result = convert_reference(name, tmp_path, "ir", backend)
    loaded = load_ir(out)
    _assert_same_ir(loaded, result.net)
    assert all(not b.flags.writeable for la in loaded for b in la.blobs)
    if backend != "caffe":
        assert any(la.weight_names and la.framework_class for la in loaded) and loaded.report


def test_ir_is_plain_msgpack_with_the_documented_layout(tmp_path: Path) -> None:
    out, result = convert_reference("e_recurrent", tmp_path, "ir")

    def no_ext(code: int, data: bytes) -> None:
        raise AssertionError(f"extension type {code} in an IR file")

    document = msgpack.unpackb(out.read_bytes(), raw=False, ext_hook=no_ext)
    assert list(document) == [IR_KEY, "name", "source_format", "caffemodel_path", "prototxt_path", "inputs", "warnings",
                              "match", "report", "metadata", "layers"]
    assert document[IR_KEY] == IR_VERSION and document["inputs"] == {"data": [6, 2], "cont": [6, 2]}
    lstm = next(la for la in document["layers"] if la["name"] == "lstm")
    assert list(lstm) == ["name", "type", "bottoms", "tops", "params", "bottom_shapes", "top_shapes", "weight_names",
                          "framework_class", "blobs"]
    blob = lstm["blobs"][0]
    assert set(blob) == {"dtype", "shape", "data"} and blob["dtype"] == "<f4" and blob["shape"] == [64, 8]
    original = result.net.layer("lstm").blobs[0]
    assert blob["data"] == np.ascontiguousarray(original, dtype="<f4").tobytes()


def test_ir_keeps_report_match_and_metadata(tmp_path: Path) -> None:
    net = Net(name="n", source_format="V2", match=MatchReport(["a"], ["b"]), warnings=["w"],
              report=[ReportEntry("l", "fused", "x")],
              conversion=Conversion(backend="x", data_format="channels_first", batchnorm_eps={"bn": 1e-5},
                                    fused={"bn": "sc"}, name_map={"a/b": "a_b"}, matlab=True),
              inputs={"data": (1, 2)}, layers=[Layer("l", "Scale", ["data"], ["data"], {"scale_param": {"axis": 1}},
                                                     [np.ones(2, np.float32)], [(1, 2)], [None], ["w"], "T")])
    _assert_same_ir(load_ir(write_with(net, tmp_path / "n.ir", "ir")), net)


def test_load_ir_reads_version_1_files(tmp_path: Path) -> None:
    """Version 1 named the source format ``format`` and a layer's framework class ``target``; both still load.

    The version 1 file is made from a version 2 one by renaming the two keys
    in the decoded document (as version 1's writer named them), so the test
    fails if the reader ignores the version and looks for the new keys only.
    """
    net = caffeport.transform(caffeport.read(*reference_files("a_lenet")), "tensorflow")
    document = msgpack.unpackb(write_with(net, tmp_path / "v2.ir", "ir").read_bytes())
    assert document[IR_KEY] == 2 and "source_format" in document and "format" not in document
    old = {IR_KEY: 1, **{("format" if k == "source_format" else k): v for k, v in document.items() if k != IR_KEY}}
    old["layers"] = [{("target" if k == "framework_class" else k): v for k, v in layer.items()}
                     for layer in document["layers"]]
    (tmp_path / "v1.ir").write_bytes(msgpack.packb(old, use_bin_type=True))
    loaded = load_ir(tmp_path / "v1.ir")
    assert loaded.source_format == net.source_format == "V2"
    assert [la.framework_class for la in loaded] == [la.framework_class for la in net] and \
        "Conv2D" in [la.framework_class for la in loaded]
    (tmp_path / "mixed.ir").write_bytes(msgpack.packb({**document, IR_KEY: 1}, use_bin_type=True))
    with pytest.raises(DecodeError, match=r"missing key '(target|format)'"):
        load_ir(tmp_path / "mixed.ir")


def test_load_ir_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    net = Net(name="n", layers=[Layer("l", "Bias", blobs=[np.ones(3, np.float32)])])
    good = write_with(net, tmp_path / "g.ir", "ir")
    raw = good.read_bytes()
    cases: dict[str, tuple[bytes, type[CaffeportError], str]] = {
        "newer": (raw.replace(b"\xaccaffeport_ir\x02", b"\xaccaffeport_ir\x03"), InputFileError, "version 3"),
        "boolean": (raw.replace(b"\xaccaffeport_ir\x02", b"\xaccaffeport_ir\xc3"), InputFileError, "version True"),
        "other": (msgpack.packb({"params": {}}), InputFileError, "not a caffeport IR file"),
        "truncated": (raw[:-5], DecodeError, "msgpack"),
        "trailing": (raw + b"\x00", DecodeError, "trailing"),
        "ext": (msgpack.packb({IR_KEY: msgpack.ExtType(1, b"x")}), DecodeError, "extension"),
        "short-blob": (raw.replace(b"\xc4\x0c", b"\xc4\x0b", 1)[:-1], DecodeError, "data bytes"),
        "empty": (b"", InputFileError, "empty"),
    }
    for case, (data, error, message) in cases.items():
        path = tmp_path / f"{case}.ir"
        path.write_bytes(data)
        with pytest.raises(error, match=message):
            load_ir(path)
    with pytest.raises(InputFileError):
        load_ir(tmp_path / "missing.ir")


class _HugeLazyBlob:
    """A lazy blob (`caffeport.streaming.blocks.LazyBlob`) too big for one msgpack binary string; never read."""

    shape = (2**30 + 1,)
    dtype = np.dtype(np.float32)

    def iter_chunks(self, max_elements: int) -> Any:
        raise AssertionError("the writer read a blob it should have refused from its size")


def test_ir_refuses_what_msgpack_cannot_hold(tmp_path: Path) -> None:
    huge = Net(layers=[Layer("big", "InnerProduct", blobs=[_HugeLazyBlob()])])  # type: ignore[list-item]
    with pytest.raises(CaffeportError, match=r"'big'.*at most"):
        write_with(huge, tmp_path / "huge.ir", "ir")
    odd = Net(layers=[Layer("l", "Bias")], conversion=Conversion(batchnorm_eps={"bn": np.float32(1e-5)}))
    with pytest.raises(ModelStructureError, match="metadata"):
        write_with(odd, tmp_path / "odd.ir", "ir")


@pytest.mark.parametrize(("metadata", "message"), [
    ({"data_format": "sideways"}, "'data_format' 'sideways' is not one of"),
    ({"batchnorm_eps": {"bn": "small"}}, "'batchnorm_eps' is not a map of names"),
    ({"matlab": 1}, "'matlab' is not a boolean"),
    ({"colour": "red"}, "unknown conversion fields"),
])
def test_load_ir_refuses_a_conversion_record_of_the_wrong_kind(metadata: dict, message: str, tmp_path: Path) -> None:
    """The IR file's ``metadata`` becomes a typed `Conversion`: a field of the wrong kind is named, not carried."""
    net = Net(name="n", layers=[Layer("l", "Bias", blobs=[np.ones(3, np.float32)])])
    good = write_with(net, tmp_path / "g.ir", "ir")
    doc = msgpack.unpackb(good.read_bytes(), raw=False, strict_map_key=False)
    doc["metadata"] = {**doc["metadata"], **metadata}
    bad = tmp_path / "bad.ir"
    bad.write_bytes(msgpack.packb(doc, use_bin_type=True))
    with pytest.raises(CaffeportError, match=message):
        load_ir(bad)


@pytest.mark.parametrize("chunk_bytes", ODD_CHUNK_BYTES)
def test_ir_odd_blobs_round_trip(chunk_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chunk_bytes(monkeypatch, chunk_bytes)
    net = odd_net()
    loaded = load_ir(write_with(net, tmp_path / "odd.ir", "ir")).layers[0].blobs
    for i, blob in enumerate(net.layers[0].blobs):
        same_bits(loaded[i], little_endian(blob), f"ir {i}")
