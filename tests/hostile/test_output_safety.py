"""Output safety: all or nothing at the output path, never over an input, never outside it.

`caffeport.io.output.atomic_output` writes a hidden temporary beside the target
and renames it on success; these tests break that in every way a user or a
file can: exceptions, Ctrl-C, SIGTERM, outputs that are inputs under another
name (symlink, hard link, relative spelling), existing files, directories,
devices, a file appearing at the path mid-write, and layer names built to
escape (``../../x``, ``/abs``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.errors import OutputError
from caffeport.io.output import atomic_output, check_output_path, exit_on_termination_signals
from tests import protowriter as pw

ROOT = Path(__file__).resolve().parents[2]
HOSTILE_NAMES = ["../../x", "/abs", "a/b", "..", ".", "~user", "C:\\win\\y", "dir/../../../z"]


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def test_writer_failure_ctrl_c_and_exit_leave_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    for exc in (RuntimeError("writer failed"), KeyboardInterrupt(), SystemExit(143)):
        with pytest.raises(type(exc)), atomic_output(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.h5.") and tmp.name.endswith(".partial.h5")
            tmp.write_bytes(b"half")
            raise exc
        assert _files(tmp_path) == [], exc
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and _files(tmp_path) == ["out.h5"]


def test_output_that_is_an_input_by_any_name(tmp_path: Path) -> None:
    model = tmp_path / "m.caffemodel"
    model.write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    link = tmp_path / "link.caffemodel"
    link.symlink_to(model)
    hard = tmp_path / "hard.caffemodel"
    os.link(model, hard)
    relative = Path(os.path.relpath(tmp_path / "sub" / ".." / "m.caffemodel"))
    for output in (model, link, hard, relative, tmp_path / "sub" / ".." / "m.caffemodel"):
        for force in (False, True):
            with pytest.raises(OutputError, match="input file"):
                check_output_path(output, force=force, inputs=[model])
    # the input given through the symlink, the output as the real file
    with pytest.raises(OutputError, match="input file"):
        check_output_path(model, force=True, inputs=[None, link])
    assert model.read_bytes() == b"weights"


def test_existing_files_directories_and_devices(tmp_path: Path) -> None:
    existing = tmp_path / "out.h5"
    existing.write_bytes(b"keep")
    with pytest.raises(OutputError, match="force=True"):
        check_output_path(existing)
    assert check_output_path(existing, force=True) == existing
    with pytest.raises(OutputError, match="directory"):
        check_output_path(tmp_path, force=True)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        check_output_path(fifo, force=True)
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.h5")
    dangling = tmp_path / "dangling.h5"
    dangling.symlink_to(tmp_path / "nowhere" / "x.h5")
    with pytest.raises(OutputError, match="symbolic link"):
        check_output_path(dangling)
    with atomic_output(dangling, force=True) as tmp:  # replaces the link itself, never writes through it
        tmp.write_bytes(b"new")
    assert not dangling.is_symlink() and dangling.read_bytes() == b"new"
    assert not (tmp_path / "nowhere").exists()
    assert existing.read_bytes() == b"keep"


def test_file_appearing_at_the_path_while_writing_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "out.npy"
    with pytest.raises(OutputError, match="appeared while"), atomic_output(target) as tmp:
        tmp.write_bytes(b"ours")
        target.write_bytes(b"theirs")
    assert target.read_bytes() == b"theirs" and _files(tmp_path) == ["out.npy"]
    with atomic_output(target, force=True) as tmp:
        tmp.write_bytes(b"ours")
    assert target.read_bytes() == b"ours" and _files(tmp_path) == ["out.npy"]


def test_sigterm_runs_the_cleanup_once_handlers_are_installed(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from caffeport.io.output import atomic_output, exit_on_termination_signals
        if sys.argv[1] == "install":
            exit_on_termination_signals()
        with atomic_output(Path({str(tmp_path)!r}) / "out.bin") as tmp:
            tmp.write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause() if hasattr(signal, "pause") else None
    """)
    installed = subprocess.run([sys.executable, "-c", script, "install"], cwd=ROOT, capture_output=True, timeout=60)
    assert installed.returncode == 128 + signal.SIGTERM, installed.stderr
    assert _files(tmp_path) == []
    # Python's default for SIGTERM kills at once: the hidden temporary stays (why the CLI installs the handler)
    default = subprocess.run([sys.executable, "-c", script, "no"], cwd=ROOT, capture_output=True, timeout=60)
    assert default.returncode == -signal.SIGTERM
    leftovers = _files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].startswith(".out.bin.") and "partial" in leftovers[0]


def test_termination_handlers_leave_other_handlers_alone() -> None:
    def mine(signum: int, frame: object) -> None:
        return None

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        exit_on_termination_signals()
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, mine)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _hostile_model(path: Path) -> Path:
    layers = b"".join(
        pw.ld(100, pw.string(1, name) + pw.string(2, "InnerProduct") + pw.ld(117, pw.vint(1, 2))
              + pw.ld(7, pw.blob(np.ones((2, 3), np.float32))) + pw.ld(7, pw.blob(np.ones(2, np.float32))))
        for name in HOSTILE_NAMES
    )
    path.write_bytes(pw.string(1, "escape") + layers)
    return path


@pytest.mark.parametrize("backend", ["tensorflow", "channels_first", "theano", "cntk"])
def test_hostile_layer_names_become_safe_group_names(tmp_path: Path, backend: str) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    model = _hostile_model(work / "m.caffemodel")
    before_root = set(os.listdir("/"))
    result = caffeport.convert(model, output=work / "out.h5", backend=backend)
    assert _files(tmp_path) == ["a", "a/b", "a/b/m.caffemodel", "a/b/out.h5"]
    assert set(os.listdir("/")) == before_root
    with h5py.File(work / "out.h5", "r") as f:
        groups = list(f.keys())
        assert len(groups) == len(HOSTILE_NAMES)
        for name in groups:
            assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and name not in (".", ".."), name
            assert all(isinstance(f[name][k], h5py.Group) for k in f[name])  # one level: <layer>/<layer>/<w>:0
    assert set(result.name_map) == set(HOSTILE_NAMES)


@pytest.mark.parametrize("format", ["caffe", "keras-h5", "npz", "safetensors", "pickle", "flax", "ir"])
def test_hostile_layer_names_never_create_files_outside_the_output(tmp_path: Path, format: str) -> None:
    from caffeport.exporters import load_exporters

    if format not in load_exporters():
        pytest.fail(f"format {format!r} is not registered")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    model = _hostile_model(work / "m.caffemodel")
    before_root = set(os.listdir("/"))
    # each format's own default backend: raw Caffe names for caffe, npz, pickle and ir (the hardest case)
    caffeport.convert(model, output=work / "out.bin", format=format)
    assert _files(tmp_path) == ["a", "a/b", "a/b/m.caffemodel", "a/b/out.bin"]
    assert set(os.listdir("/")) == before_root
