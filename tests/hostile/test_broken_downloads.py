"""The files users get instead of a model, and the messages that tell them what they have (issues 14.9, 15.7, 15.9).

A truncated download names the layer whose bytes are cut (found here by walking the whole file's top-level fields
with `caffeport.codec.wire`), not the last complete one. A Git LFS pointer, a saved HTML page, a compressed or
archived model and a UTF-16 prototxt are recognised wherever a caffemodel, prototxt or binaryproto is read, and
the message says what the file is and what to do. A mean file given as a caffemodel points to `caffeport mean`.
Warnings name what they are about: the layers holding a fork's fields, the TRAIN-only layer a net's input comes
from. Each case is generated here from a shared real model (or edits one in tmp_path), and each error is checked
through the API (the exact `CaffeportError` subclass, the file named) and the CLI (exit 1, one line, no
traceback).
"""

from __future__ import annotations

import gzip
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.codec.wire import LENGTH, Reader
from caffeport.errors import CaffeportError, DecodeError, InputFileError, InternalDecodeError
from caffeport.readers.prototxt_text import parse_text_file
from tests import protowriter as pw
from tests.conftest import models_dir
from tests.hostile.hostile_helpers import HANG_SECONDS, hang_guard

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=HANG_SECONDS)


def _cli_error(*args: str | Path) -> str:
    """The one error line `caffeport ARGS` prints, after checking it exits 1 without a traceback."""
    done = _cli(*args)
    assert done.returncode == 1, (done.returncode, done.stdout[-500:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("caffeport: error: ")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _error(kind: type[CaffeportError], read: object, *args: object) -> CaffeportError:
    with hang_guard(), pytest.raises(kind) as info:
        read(*args)  # type: ignore[operator]
    assert type(info.value) is kind, repr(info.value)
    assert not isinstance(info.value, InternalDecodeError)
    return info.value


# --------------------------------------------------------------------------
# Truncated caffemodels name the layer whose bytes are cut


def _layer_spans(data: bytes) -> list[tuple[str, int, int, int]]:
    """(name, tag offset, payload start, payload end) of each top-level layer, by walking the whole file."""
    reader = Reader(data)
    spans = []
    for field in reader.fields(0, len(data)):
        if field.number in (2, 100) and field.wire_type == LENGTH:
            name_number = 1 if field.number == 100 else 4
            names = [reader.string(f) for f in reader.fields(field.start, field.end) if f.number == name_number]
            spans.append((names[0], field.offset, field.start, field.end))
    return spans


def _name_end(data: bytes, start: int, end: int, number: int) -> int:
    """Where the name field of the layer payload ``data[start:end]`` ends."""
    reader = Reader(data)
    return next(f.end for f in reader.fields(start, end) if f.number == number)


def _cut(tmp_path: Path, source: Path, size: int) -> Path:
    path = tmp_path / f"cut{size}_{source.name}"
    path.write_bytes(source.read_bytes()[:size])
    return path


@pytest.mark.parametrize(("model", "layer"), [
    ("mtcnn/det3.caffemodel", "conv1"),
    ("mtcnn/det3.caffemodel", "conv5"),
    ("mtcnn/det3.caffemodel", "prelu5"),
    ("mtcnn/det3.caffemodel", "loss3"),
    ("lenet-v1/lenet_iter_10000.caffemodel", "conv2"),  # V1 `layers`
    ("lenet-v2/lenet_iter_10000.caffemodel", "ip1"),
])
def test_a_truncated_caffemodel_names_the_layer_that_is_cut(tmp_path: Path, model: str, layer: str) -> None:
    source = models_dir() / model
    data = source.read_bytes()
    spans = _layer_spans(data)
    index = [name for name, *_ in spans].index(layer)
    _, offset, start, end = spans[index]
    v1 = "lenet-v1" in model
    after_name = _name_end(data, start, end, 4 if v1 else 1)
    for size in sorted({after_name, (after_name + end) // 2, end - 1}):
        path = _cut(tmp_path, source, size)
        error = _error(DecodeError, caffeport.read, path)
        assert error.path == str(path) and error.layer == layer and error.offset == offset, str(error)
        assert error.message == (f"this layer (layer {index + 1}) claims {end - start:,} bytes but only"
                                 f" {size - start:,} remain in the file: the file is truncated (an interrupted"
                                 " download?) or corrupt")
    line = _cli_error("inspect", path)
    assert line == f"caffeport: error: {path}: layer {layer!r}: byte offset {offset}: {error.message}"


def test_a_cut_before_the_layer_name_is_complete_names_the_last_whole_layer(tmp_path: Path) -> None:
    source = models_dir() / "mtcnn" / "det3.caffemodel"
    data = source.read_bytes()
    spans = _layer_spans(data)
    (previous, *_), (_, offset, start, end) = spans[2], spans[3]
    for size in (start, start + 3, _name_end(data, start, end, 1) - 1):
        path = _cut(tmp_path, source, size)
        error = _error(DecodeError, caffeport.read, path)
        assert error.layer is None and error.offset == offset
        assert error.message == (f"layer 4 claims {end - start:,} bytes but only {size - start:,} remain in the file,"
                                 f" which ends before the layer's name is complete (after layer {previous!r}, the"
                                 " last complete one): the file is truncated (an interrupted download?) or corrupt")
    assert f"after layer {previous!r}, the last complete one" in _cli_error("inspect", path)


def test_a_truncated_v0_model_names_the_cut_layer(tmp_path: Path) -> None:
    """V0: the name sits in the old ``layer`` message nested in the V1 entry, which is cut too."""
    weights = np.arange(40, dtype=np.float32).reshape(4, 10)
    v0 = lambda name: pw.ld(2, pw.ld(1, pw.string(1, name) + pw.string(2, "innerproduct")  # noqa: E731
                                     + pw.ld(50, pw.blob(weights, legacy=True))))
    data = pw.string(1, "old") + v0("fc1") + v0("fc2")
    whole = tmp_path / "v0.caffemodel"
    whole.write_bytes(data)
    assert [layer.name for layer in caffeport.read(whole).layers] == ["fc1", "fc2"]
    path = tmp_path / "v0_cut.caffemodel"
    path.write_bytes(data[:-20])
    error = _error(DecodeError, caffeport.read, path)
    assert error.layer == "fc2" and error.message.startswith("this layer (layer 2) claims")


# --------------------------------------------------------------------------
# Broken downloads: what the file is and what to do, wherever it is read

def _det1() -> tuple[Path, Path]:
    return models_dir() / "mtcnn" / "det1.caffemodel", models_dir() / "mtcnn" / "det1.prototxt"


def _tar(name: str, payload: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


def _zip(name: str, payload: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, payload)
    return out.getvalue()


def _broken(kind: str) -> bytes:
    """A file of ``kind`` as it arrives in place of det1's caffemodel or prototxt."""
    model, prototxt = (p.read_bytes() for p in _det1())
    text = prototxt.decode()
    return {
        "lfs": b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 28163\n",
        "html": b"\n<!DOCTYPE html>\n<html lang=\"en\"><head><title>det1.caffemodel</title></head><body>...",
        "html-tag": b"<html><body>404: Not Found</body></html>\n",
        "gzip": gzip.compress(model),
        "gzip-prototxt": gzip.compress(prototxt),
        "zip": _zip("det1.caffemodel", model),
        "tar": _tar("det1.caffemodel", model),
        "utf16": text.encode("utf-16"),  # with a BOM, as Windows editors write it
        "utf16-be": b"\xfe\xff" + text.encode("utf-16-be"),
        "utf16-no-bom": text.encode("utf-16-le"),
    }[kind]


#: kind -> (a fragment of the message saying what it is, a fragment saying what to do)
BROKEN = {
    "lfs": ("this is a Git LFS pointer, not the model (the real file is 28,163 bytes)", "`git lfs pull`"),
    "html": ("this is a saved HTML page", "download the file itself"),
    "html-tag": ("this is a saved HTML page", "download the file itself"),
    "gzip": ("this file is gzip-compressed", "decompress it first (gunzip"),
    "gzip-prototxt": ("this file is gzip-compressed", "decompress it first (gunzip"),
    "zip": ("this is a zip archive", "extract the file from it first (unzip"),
    "tar": ("this is a tar archive", "extract the file from it first (tar -xf"),
    "utf16": ("this file is UTF-16 text", "save it as UTF-8"),
    "utf16-be": ("this file is UTF-16 text", "save it as UTF-8"),
    "utf16-no-bom": ("this file is UTF-16 text", "save it as UTF-8"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_download_says_what_it_is_wherever_it_is_read(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"det1_{kind}.bin"
    path.write_bytes(_broken(kind))
    model, prototxt = _det1()
    what, todo = BROKEN[kind]
    for read, args in [
        (caffeport.read, (path,)),  # as the caffemodel
        (caffeport.read, (path, prototxt)),  # as the caffemodel, with a good prototxt
        (caffeport.read, (None, path)),  # as the prototxt
        (caffeport.read, (model, path)),  # as the prototxt, with a good caffemodel
        (caffeport.read_blob, (path,)),  # as a binaryproto
        (parse_text_file, (path,)),
    ]:
        error = _error(InputFileError, read, *args)
        assert str(error) == f"{path}: {error.message}" and what in error.message and todo in error.message
    for args in (("inspect", path), ("inspect", path, "-p", prototxt), ("inspect", model, "-p", path),
                 ("mean", path, "-o", tmp_path / "mean.npy")):
        line = _cli_error(*args)
        assert line.startswith(f"caffeport: error: {path}: ") and what in line and todo in line
    assert not (tmp_path / "mean.npy").exists()


def test_files_that_merely_resemble_broken_downloads_still_read(tmp_path: Path) -> None:
    """A prototxt mentioning html or LFS in a comment is a prototxt; every shared model and mean still reads."""
    _, prototxt = _det1()
    path = tmp_path / "net.prototxt"
    path.write_text("# see <html> or version https://git-lfs.github.com/spec/v1\n" + prototxt.read_text())
    assert [layer.name for layer in caffeport.read(prototxt=path).layers] == [
        layer.name for layer in caffeport.read(prototxt=prototxt).layers]
    for model in sorted(models_dir().rglob("*.caffemodel")):
        assert caffeport.read(model).layers, model
    for mean in sorted(models_dir().rglob("*.binaryproto")):
        assert caffeport.read_blob(mean).size, mean


# --------------------------------------------------------------------------
# A mean file given as a caffemodel; an HDF5 snapshot with its prototxt


@pytest.mark.parametrize("mean", ["means/cifar10/mean.binaryproto", "means/ilsvrc12/imagenet_mean.binaryproto",
                                  "generated"])
def test_a_binaryproto_given_as_a_caffemodel_points_to_caffeport_mean(tmp_path: Path, mean: str) -> None:
    if mean == "generated":  # a BlobProto with a `shape` message rather than legacy dims
        path = tmp_path / "mean.binaryproto"
        path.write_bytes(pw.blob(np.ones((1, 3, 2, 2), np.float32)))
    else:
        path = models_dir() / mean
    shape = tuple(caffeport.read_blob(path).shape)
    error = _error(InputFileError, caffeport.read, path)
    assert str(error) == (f"{path}: this is a BlobProto (a .binaryproto such as a mean image, shape {shape}), not a"
                          f" caffemodel: read it with `caffeport mean {path} -o mean.npy` (or caffeport.read_blob)")
    assert _cli_error("inspect", path) == f"caffeport: error: {error}"


def test_a_corrupt_caffemodel_is_not_called_a_blobproto(tmp_path: Path) -> None:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(pw.vint(1, 5) + b"\x07")  # field 1 as a number, then a truncated field
    error = _error(DecodeError, caffeport.read, path)
    assert "BlobProto" not in str(error)


def test_an_hdf5_snapshot_read_with_its_prototxt_does_not_ask_for_the_prototxt() -> None:
    folder = models_dir() / "cifar10-quick-v2-hdf5"
    snapshot, prototxt = folder / "cifar10_quick_iter_5000.caffemodel.h5", folder / "cifar10_quick.prototxt"
    ask = "an HDF5 snapshot holds no layer types or connections: pass the prototxt for those"
    assert ask in caffeport.read(snapshot).warnings
    assert not [w for w in caffeport.read(snapshot, prototxt).warnings if "pass the prototxt" in w]
    done = _cli("inspect", snapshot, "-p", prototxt)
    assert done.returncode == 0 and "pass the prototxt" not in done.stdout + done.stderr


# --------------------------------------------------------------------------
# Warnings that name what they are about


def test_the_fork_field_warning_names_the_layers() -> None:
    path = models_dir() / "yunet-libfacedetection" / "yufacedetectnet-open-v1.caffemodel"
    names = [name for name, *_ in _layer_spans(path.read_bytes())]
    expected = (f"LayerParameter fields [145, 146, 147, 148] hold plain values where BVLC Caffe has parameter messages"
                f" (a Caffe fork's extension), in layers {names[0]!r}, {names[1]!r}, {names[2]!r} and"
                f" {len(names) - 3} more (every layer of the file): skipped")
    assert [w for w in caffeport.read(path).warnings if "LayerParameter fields" in w] == [expected]
    done = _cli("inspect", path)
    assert done.returncode == 0 and (done.stdout + done.stderr).count("LayerParameter fields") == 1
    assert f"warning: {expected}" in done.stdout + done.stderr


@pytest.mark.parametrize(("forked", "where"), [
    (["b"], "in layer 'b'"),
    (["a", "c"], "in layers 'a' and 'c'"),
    (["a", "b", "c"], "in layers 'a', 'b' and 'c'"),
])
def test_fork_fields_in_some_layers_are_listed_by_layer(tmp_path: Path, forked: list[str], where: str) -> None:
    def layer(name: str) -> bytes:
        fork = pw.vint(145, 1) + pw.vint(147, 0) if name in forked else b""
        return pw.ld(100, pw.string(1, name) + pw.string(2, "ReLU") + fork)

    path = tmp_path / "fork.caffemodel"
    path.write_bytes(pw.string(1, "fork") + b"".join(layer(n) for n in "abcd"))
    warnings = [w for w in caffeport.read(path).warnings if "LayerParameter fields" in w]
    assert warnings == [f"LayerParameter fields [145, 147] hold plain values where BVLC Caffe has parameter messages"
                        f" (a Caffe fork's extension), {where}: skipped"]


def _without_test_data_layer(source: Path, tmp_path: Path) -> Path:
    """``source`` with the layer entry holding ``phase: TEST`` (its TEST data layer) removed."""
    text = source.read_text()
    at = text.index("phase: TEST")
    start = max(text.rfind("\nlayer {", 0, at), text.rfind("\nlayers {", 0, at))
    end = min(i for i in (text.find("\nlayer {", at), text.find("\nlayers {", at)) if i >= 0)
    path = tmp_path / f"train_only_{source.name}"
    path.write_text(text[:start] + text[end:])
    return path


@pytest.mark.parametrize(("source", "layer", "kind"), [
    ("lenet-v1/lenet_train_test.prototxt", "mnist", "Data"),  # V1 `layers`, enum type DATA
    ("cifar10-quick-v2-hdf5/cifar10_quick_train_test.prototxt", "cifar", "Data"),
])
def test_an_input_from_a_train_only_layer_is_explained(tmp_path: Path, source: str, layer: str, kind: str) -> None:
    whole = models_dir() / source
    assert not [w for w in caffeport.read(prototxt=whole).warnings if "excluded" in w]
    path = _without_test_data_layer(whole, tmp_path)
    net = caffeport.read(prototxt=path)
    assert all(shape is None for lay in net.layers for shape in lay.top_shapes)
    expected = (f"inputs 'data' and 'label' come only from layer {layer!r} ({kind}), which is excluded in the TEST"
                " phase: their shapes and the shapes after them are unknown; pass the deploy prototxt (one with an"
                " Input layer or input_shape) for shapes")
    assert expected in net.warnings
    assert [w for w in caffeport.read(prototxt=path, phase="TRAIN").warnings if "excluded" in w] == []
    done = _cli("inspect", path)
    assert done.returncode == 0 and f"warning: {expected}" in done.stdout + done.stderr
