"""README's quick start works as written: the convert command, the Keras model and the reference agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import caffeport

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
QUICK = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_quick_start_converts_pnet_and_its_keras_model_matches_the_reference(tmp_path: Path) -> None:
    [command] = [line for line in QUICK.splitlines() if line.startswith("python3 -m venv .venv && ")]
    convert = command.split(".venv/bin/caffeport ", 1)[1].split()
    assert convert[0] == "convert"
    args = [str(ROOT / a) if a.startswith("examples/") else a for a in convert]
    result = subprocess.run([sys.executable, "-m", "caffeport", *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "det1.h5").is_file()

    [code] = re.findall(r"```python\n(.*?)```", QUICK, flags=re.S)
    namespace: dict[str, object] = {}
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        exec(compile(code, "README quick start", "exec"), namespace)
    finally:
        os.chdir(cwd)
    model = namespace["model"]

    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 22, 30)).astype(np.float32)  # any size: fully convolutional
    net = caffeport.read(ROOT / "examples/mtcnn/det1.caffemodel", ROOT / "examples/mtcnn/det1.prototxt")
    want = caffeport.run(net, {"data": x})
    got = model(np.transpose(x, (0, 2, 3, 1)))
    for name in ("prob1", "conv4-2"):
        value = np.transpose(np.asarray(got[name]), (0, 3, 1, 2))
        assert value.shape == want[name].shape, name
        np.testing.assert_allclose(value, want[name], rtol=1e-4, atol=1e-5 * float(np.abs(want[name]).max()))
