"""The command line as a user runs it: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.cli import main
from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *args], capture_output=True, text=True, cwd=ROOT)


def test_inspect_example_model() -> None:
    result = run("inspect", "examples/mtcnn/det1.caffemodel", "-p", "examples/mtcnn/det1.prototxt")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # PNet on its declared 1x3x12x12 input: conv1 3x3 -> 10x10, pool 2/2 ceil -> 5x5, conv2 -> 3x3, conv3 -> 1x1
    assert "conv1[1x10x10x10]" in out
    assert "pool1[1x10x5x5]" in out
    assert "conv4-2[1x4x1x1]" in out
    assert "format: V2" in out


def test_inspect_json_every_shared_model(capsys: pytest.CaptureFixture[str]) -> None:
    for model in sorted(models_dir().rglob("*.caffemodel")):
        assert main(["inspect", str(model), "--json"]) == 0
        described = json.loads(capsys.readouterr().out)
        net = caffeport.read(model)
        assert [la["name"] for la in described["layers"]] == [la.name for la in net]
        assert described["num_weights"] == net.num_weights > 0


def test_inspect_prototxt_alone() -> None:
    result = run("inspect", "examples/mtcnn/det1.prototxt")
    assert result.returncode == 0, result.stderr
    assert "format: prototxt" in result.stdout


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes((ROOT / "examples/mtcnn/det1.caffemodel").read_bytes()[:5000])
    for args in (["inspect", str(cut)], ["inspect", str(tmp_path / "missing.caffemodel")],
                 ["inspect", "examples/mtcnn/det1.prototxt", "-p", "examples/mtcnn/det1.caffemodel"]):
        result = run(*args)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("caffeport: error: ")
    assert "byte offset" in run("inspect", str(cut)).stderr


def test_mean_writes_npy_and_refuses_to_overwrite(tmp_path: Path) -> None:
    mean_file = models_dir() / "means" / "cifar10" / "mean.binaryproto"
    out = tmp_path / "mean.npy"
    result = run("mean", str(mean_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    saved = np.load(out)
    assert saved.shape == (3, 32, 32) and saved.dtype == np.float32
    np.testing.assert_array_equal(saved, caffeport.read_blob(mean_file)[0])
    again = run("mean", str(mean_file), "-o", str(out))
    assert again.returncode == 1 and "--force" in again.stderr
    assert run("mean", str(mean_file), "-o", str(out), "--force").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mean.npy"], "no temporary files left behind"


def test_help_explains_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "inspect" in result.stdout and "mean" in result.stdout
