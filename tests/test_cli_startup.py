"""The command line's first and last moments: no arguments, Ctrl-C during the imports, output encodings.

Both ways of starting caffeport are run: ``python -m caffeport`` and the
console script, the latter exactly as pip's generated script calls the entry
point pyproject.toml declares (``from MODULE import FUNC; sys.exit(FUNC())``),
so the test follows the declaration rather than an old installed script.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.hostile_helpers import HANG_SECONDS

ROOT = Path(__file__).resolve().parents[1]


def console_script(name: str = "caffeport") -> list[str]:
    """The console script ``name`` as pip writes it, from pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    found = re.search(rf'^{re.escape(name)}\s*=\s*"([\w.]+):(\w+)"', scripts, re.MULTILINE)
    assert found, f"pyproject.toml declares no {name} console script"
    module, func = found.groups()
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


STARTS = {"python -m caffeport": [sys.executable, "-m", "caffeport"], "console script": console_script()}


@pytest.mark.parametrize("start", sorted(STARTS))
def test_no_arguments_print_the_help(start: str) -> None:
    result = subprocess.run(STARTS[start], capture_output=True, text=True, cwd=ROOT, timeout=HANG_SECONDS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: caffeport"), result.stdout
    for command in ("inspect", "convert", "check", "run", "mean"):
        assert command in result.stdout
    assert result.stderr == ""


#: a sitecustomize that makes ``import numpy`` announce itself and then sleep: a Ctrl-C sent after the
#: announcement lands inside caffeport's start-up imports, every time
SLOW_NUMPY = '''
import sys, time

class SlowNumpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            sys.meta_path.remove(self)
            sys.stderr.write("importing numpy\\n")
            sys.stderr.flush()
            time.sleep(600)
        return None

sys.meta_path.insert(0, SlowNumpy())
'''


def _signal_during_the_imports(command: list[str], tmp_path: Path, *, group: bool = False,
                               ) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with `SLOW_NUMPY`; SIGINT it (its whole process group with ``group``, as a terminal's
    Ctrl-C does) as soon as it has said "importing numpy"; its status, stdout and the rest of stderr."""
    (tmp_path / "sitecustomize.py").write_text(SLOW_NUMPY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=group)
    try:
        ready, _, _ = select.select([process.stderr], [], [], HANG_SECONDS)
        assert ready, "the process never reached import numpy"
        assert process.stderr.readline() == "importing numpy\n"
        if group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=HANG_SECONDS)
    finally:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.kill()
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("start", sorted(STARTS))
def test_ctrl_c_during_the_imports_is_one_line_and_a_death_by_sigint(start: str, tmp_path: Path) -> None:
    """The one line, no traceback, and the process ends by SIGINT (what a shell reports as 130)."""
    result = _signal_during_the_imports([*STARTS[start], "inspect", "examples/mtcnn/det1.prototxt"], tmp_path)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == "caffeport: interrupted\n"
    assert result.stdout == ""
    assert result.returncode == -signal.SIGINT


def test_the_weight_converter_script_ends_by_sigint_too(tmp_path: Path) -> None:
    model = ROOT / "examples" / "mtcnn"
    result = _signal_during_the_imports([*console_script("caffe-weight-converter"), str(tmp_path / "out"),
                                         str(model / "det1.prototxt"), str(model / "det1.caffemodel")], tmp_path)
    assert result.stderr == "caffe-weight-converter: interrupted\n", result.stderr
    assert result.returncode == -signal.SIGINT


def test_ctrl_c_stops_the_shell_script_that_runs_caffeport(tmp_path: Path) -> None:
    """Why the entry point dies by SIGINT instead of exiting 130: bash, which gets the terminal's SIGINT too,
    waits for the foreground command and stops the script only if the command died of it; after a command
    that exits 130 (it handled the Ctrl-C) the script goes on, a loop with its next model."""
    script = f"{shlex.join(STARTS['python -m caffeport'])} inspect examples/mtcnn/det1.prototxt; echo went on"
    result = _signal_during_the_imports(["bash", "-c", script], tmp_path, group=True)
    assert result.stdout == "", "the script went on after the Ctrl-C"
    assert result.stderr == "caffeport: interrupted\n"
    assert result.returncode == -signal.SIGINT


#: "konv1" in Cyrillic letters
NAME = "\u043a\u043e\u043d\u0432" + "1"
PROTOTXT = f'''name: "cyrillic"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{ name: "{NAME}" type: "Convolution" bottom: "data" top: "{NAME}"
        convolution_param {{ num_output: 2 kernel_size: 3 }} }}
'''


def test_non_ascii_names_under_an_ascii_output_encoding(tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(PROTOTXT, encoding="utf-8")
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-m", "caffeport", "inspect", str(prototxt)], capture_output=True,
                            cwd=ROOT, env=env, timeout=HANG_SECONDS)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert NAME.encode("ascii", "backslashreplace") in result.stdout
    assert "1x2x6x6" in result.stdout.decode("ascii") or "(1, 2, 6, 6)" in result.stdout.decode("ascii")

    missing = tmp_path / f"{NAME}.caffemodel"
    result = subprocess.run([sys.executable, "-m", "caffeport", "inspect", str(missing)], capture_output=True,
                            cwd=ROOT, env=env, timeout=HANG_SECONDS)
    assert result.returncode == 1, result.stdout.decode()
    lines = result.stderr.decode("ascii").splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffeport: error: "), lines
    assert "\\u043a\\u043e\\u043d\\u0432" in lines[0]


def test_a_conversion_imports_only_what_its_format_needs(tmp_path: Path) -> None:
    """h5py (about 25 ms and a ``uname -p`` child at import) only for the HDF5 formats and readers: an npz or ONNX
    conversion of a caffemodel never loads it; keras-h5 does."""
    model, proto = ROOT / "examples" / "mtcnn" / "det1.caffemodel", ROOT / "examples" / "mtcnn" / "det1.prototxt"
    code = ("import runpy, sys\n"
            "sys.argv = ['caffeport', 'convert', *sys.argv[1:], '-q']\n"
            "try:\n    runpy.run_module('caffeport', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(sorted(m for m in ('h5py', 'onnx', 'torch', 'tensorflow', 'jax') if m in sys.modules))\n")
    for fmt, suffix, loaded in (("npz", ".npz", "[]"), ("onnx", ".onnx", "[]"), ("keras-h5", ".h5", "['h5py']")):
        done = subprocess.run([sys.executable, "-c", code, str(model), "-p", str(proto), "-f", fmt, "-o",
                               str(tmp_path / f"m{suffix}")], capture_output=True, text=True, cwd=ROOT,
                              timeout=HANG_SECONDS)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == loaded, (fmt, done.stdout)
