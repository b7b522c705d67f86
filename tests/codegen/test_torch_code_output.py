"""``-f torch-code`` writes a directory: all of it or nothing, never over an input, never over a folder unless forced.

`caffeport.io.output.atomic_output_directory` fills a hidden ``.NAME.*.partial``
directory beside the target and renames it into place on success; these
tests break that with writer errors, Ctrl-C, SIGTERM, a full disk (a 1 MiB
tmpfs, root only as in tests/hostile), a folder appearing meanwhile, an
existing output and a target folder that holds the model itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, OutputError
from caffeport.exporters import load_exporters
from caffeport.io.output import atomic_output, atomic_output_directory, check_output_path
from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "examples" / "mtcnn" / "det1.caffemodel"
PROTO = ROOT / "examples" / "mtcnn" / "det1.prototxt"


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


def test_the_format_is_a_directory_format_of_the_torch_backend() -> None:
    exporter = load_exporters("torch-code")["torch-code"]
    assert exporter.directory and exporter.backends == ("torch",) and exporter.default_backend == "torch"
    assert not load_exporters()["safetensors"].directory


def test_written_whole_with_a_trailing_separator_and_nothing_else_beside_it(tmp_path: Path) -> None:
    result = _cli("convert", str(MODEL), "-p", str(PROTO), "-f", "torch-code", "-o", f"{tmp_path / 'pnet'}{os.sep}")
    assert result.returncode == 0, result.stderr
    assert _files(tmp_path) == ["pnet", "pnet/README.md", "pnet/model.py", "pnet/weights.safetensors"]
    assert oct((tmp_path / "pnet").stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    source = (tmp_path / "pnet" / "model.py").read_text()
    import hashlib

    assert hashlib.sha256(MODEL.read_bytes()).hexdigest() in source  # the docstring names the sources' sha256
    assert hashlib.sha256(PROTO.read_bytes()).hexdigest() in source
    assert "import caffeport" not in source and "from caffeport" not in source


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_existing_output_is_refused_unless_forced_and_then_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(OutputError, match=r"already exists \(a directory\); pass force=True"):
        caffeport.convert(MODEL, PROTO, out, format="torch-code")
    assert _files(tmp_path) == ["out", "out/old.txt"]
    result = _cli("convert", str(MODEL), "-p", str(PROTO), "-f", "torch-code", "-o", str(out))
    assert result.returncode == 1 and "pass --force" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    caffeport.convert(MODEL, PROTO, out, format="torch-code", force=True)
    assert _files(tmp_path) == ["out", "out/README.md", "out/model.py", "out/weights.safetensors"]
    file_target = tmp_path / "file"
    file_target.write_text("a file")
    with pytest.raises(OutputError, match=r"already exists \(a file\)"):
        caffeport.convert(MODEL, PROTO, file_target, format="torch-code")
    caffeport.convert(MODEL, PROTO, file_target, format="torch-code", force=True)
    assert file_target.is_dir() and (file_target / "model.py").is_file()


def test_a_folder_holding_an_input_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    model, proto = folder / "det1.caffemodel", folder / "det1.prototxt"
    model.write_bytes(MODEL.read_bytes())
    proto.write_bytes(PROTO.read_bytes())
    for target in (folder, tmp_path):
        with pytest.raises(OutputError, match="holds the input"):
            caffeport.convert(model, proto, target, format="torch-code", force=True)
    with pytest.raises(OutputError, match="the name says caffe"):  # named like a file format: refused first
        caffeport.convert(model, proto, model, format="torch-code", force=True)
    with pytest.raises(OutputError, match="refusing to write over an input"):
        check_output_path(model, force=True, inputs=[model], directory=True)
    assert model.read_bytes() == MODEL.read_bytes() and proto.read_bytes() == PROTO.read_bytes()
    assert _files(tmp_path) == ["models", "models/det1.caffemodel", "models/det1.prototxt"]


@pytest.mark.parametrize(("name", "says"), [("w.h5", "keras-h5"), ("w.safetensors", "safetensors"),
                                             ("m.onnx", "onnx")])
def test_a_folder_named_like_a_file_format_is_refused(tmp_path: Path, name: str, says: str) -> None:
    import caffeport.exporters.onnx  # registers -f onnx (until caffeport/exporters/__init__.py lists it)

    with pytest.raises(OutputError, match=f"the name says {says} .* writes a folder"):
        caffeport.convert(MODEL, PROTO, tmp_path / name, format="torch-code")
    with pytest.raises(CaffeportError, match="does not write the tensorflow backend's layout"):
        caffeport.convert(MODEL, PROTO, tmp_path / "x", format="torch-code", backend="tensorflow")
    assert not list(tmp_path.iterdir())


def test_writer_failure_and_ctrl_c_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import caffeport.codegen.torch as generator

    real = generator.readme
    for exc in (RuntimeError("the README failed"), KeyboardInterrupt(), SystemExit(143)):
        def failing(model: object, exc: BaseException = exc) -> str:
            raise exc

        monkeypatch.setattr(generator, "readme", failing)  # model.py and the weights are written by then
        import caffeport.codegen

        monkeypatch.setattr(caffeport.codegen, "readme", failing)
        with pytest.raises(type(exc)):
            caffeport.convert(MODEL, PROTO, tmp_path / "out", format="torch-code")
        assert _files(tmp_path) == [], exc
    monkeypatch.setattr(generator, "readme", real)


def test_a_folder_appearing_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(OutputError, match="already exists"), atomic_output_directory(target) as tmp:
        (tmp / "ours.txt").write_text("ours")
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")
    assert _files(tmp_path) == ["out", "out/theirs.txt"]
    with atomic_output(target, force=True, directory=True) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "ours.txt").write_text("ours")
    assert _files(tmp_path) == ["out", "out/sub", "out/sub/ours.txt"]


def test_sigterm_mid_write_leaves_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from caffeport.io.output import atomic_output_directory, exit_on_termination_signals
        exit_on_termination_signals()
        with atomic_output_directory(Path({str(tmp_path)!r}) / "out") as tmp:
            (tmp / "model.py").write_text("half")
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert _files(tmp_path) == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (root only: CI runs as root), unmounted whatever the test did."""
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_full_disk_is_one_line_and_leaves_nothing(tiny_fs: Path) -> None:
    """MTCNN's det4 (3.8 MB of weights) into 1 MiB."""
    folder = models_dir() / "mtcnn"
    result = _cli("convert", str(folder / "det4.caffemodel"), "-p", str(folder / "det4.prototxt"), "-f", "torch-code",
                  "-o", str(tiny_fs / "det4"), "-q")
    assert result.returncode == 1 and "No space left on device" in result.stderr, result.stderr
    assert str(tiny_fs / "det4") in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(tiny_fs) == []


def test_the_weights_load_strictly_into_the_module_and_hold_the_caffe_values(tmp_path: Path) -> None:
    """The safetensors keys are the generated attributes (conv4-1 -> conv4_1), values those of the caffemodel."""
    from safetensors.numpy import load_file

    caffeport.convert(MODEL, PROTO, tmp_path / "pnet", format="torch-code")
    tensors = load_file(str(tmp_path / "pnet" / "weights.safetensors"))
    net = caffeport.read(MODEL, PROTO)
    expected = {}
    for layer in net.layers:
        attr = layer.name.replace("-", "_")
        if layer.type == "Convolution":
            expected[f"{attr}.weight"], expected[f"{attr}.bias"] = layer.blobs[0], layer.blobs[1]
        elif layer.type == "PReLU":
            expected[f"{attr}.weight"] = layer.blobs[0]
    assert set(tensors) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(tensors[key], np.asarray(value, np.float32).reshape(tensors[key].shape))
    assert "NAME_MAP: dict[str, str] = {'conv4-1': 'conv4_1', 'conv4-2': 'conv4_2'}" in (
        tmp_path / "pnet" / "model.py").read_text()
