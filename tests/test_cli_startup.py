"""The command line's first and last moments: no arguments, Ctrl-C during the imports, output encodings.

Both ways of starting caffeport are run: ``python -m caffeport`` and the
console script, the latter exactly as pip's generated script calls the entry
point pyproject.toml declares (``from MODULE import FUNC; sys.exit(FUNC())``),
so the test follows the declaration rather than an old installed script.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.hostile_helpers import HANG_SECONDS

ROOT = Path(__file__).resolve().parents[1]


def console_script() -> list[str]:
    """The ``caffeport`` console script as pip writes it, from pyproject.toml's [project.scripts]."""
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^caffeport\s*=\s*"([\w.]+):(\w+)"', scripts, re.MULTILINE)
    assert found, "pyproject.toml declares no caffeport console script"
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


@pytest.mark.parametrize("start", sorted(STARTS))
def test_ctrl_c_during_the_imports_is_one_line_and_exit_130(start: str, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SLOW_NUMPY)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    process = subprocess.Popen([*STARTS[start], "inspect", "examples/mtcnn/det1.prototxt"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([process.stderr], [], [], HANG_SECONDS)
        assert ready, "the process never reached import numpy"
        assert process.stderr.readline() == "importing numpy\n"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=HANG_SECONDS)
    finally:
        process.kill()
        process.wait()
    assert "Traceback" not in stderr, stderr
    assert stderr == "caffeport: interrupted\n"
    assert stdout == ""
    assert process.returncode == 130


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
