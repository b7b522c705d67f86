"""``caffeport verify`` end to end: exit 0 on a good export, 1 with a FAIL row when one initializer is corrupted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[2]


def caffeport_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def _det(name: str) -> tuple[Path, Path]:
    return models_dir() / "mtcnn" / f"{name}.caffemodel", models_dir() / "mtcnn" / f"{name}.prototxt"


def test_verify_passes_a_good_export_and_fails_a_corrupted_one(tmp_path: Path) -> None:
    model, proto = _det("det2")
    out = tmp_path / "det2.onnx"
    converted = caffeport_cli("convert", model, "-p", proto, "-f", "onnx", "-o", out)
    assert converted.returncode == 0, converted.stderr
    good = caffeport_cli("verify", model, "-p", proto, out, "--random", "3", "--all-layers")
    assert good.returncode == 0, good.stdout + good.stderr
    rows = [line for line in good.stdout.splitlines() if line.endswith("  ok")]
    assert len(rows) == 13 and "13 of 13 tensors match within rtol 0.0001" in good.stdout
    assert "prob1 (output)" in good.stdout and "prelu1/conv1" in good.stdout

    corrupted = onnx.load(str(out))
    (weight,) = [init for init in corrupted.graph.initializer if init.name == "conv3/weight"]
    values = numpy_helper.to_array(weight).copy()
    values[0, 0, 0, 0] += 1.0  # one value of one kernel
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    bad_path = tmp_path / "bad.onnx"
    onnx.save(corrupted, str(bad_path))
    bad = caffeport_cli("verify", model, "-p", proto, bad_path, "--random", "3", "--all-layers")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failed = [line.split()[0] for line in bad.stdout.splitlines() if "FAIL" in line and "of" not in line.split()[:2]]
    assert "conv3/conv3" in failed and "conv1" not in failed  # the layers before it still match
    outputs_only = caffeport_cli("verify", model, "-p", proto, bad_path, "--random", "3")
    assert outputs_only.returncode == 1 and "tensors match" in outputs_only.stdout
    assert "conv3/conv3" not in outputs_only.stdout  # without --all-layers: the net outputs only


def test_verify_with_an_input_file_and_a_tight_rtol(tmp_path: Path) -> None:
    model, proto = _det("det1")
    out = tmp_path / "det1.onnx"
    assert caffeport_cli("convert", model, "-p", proto, "-f", "onnx", "-o", out).returncode == 0
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32))
    ok = caffeport_cli("verify", model, "-p", proto, out, "--input", f"data={x}")
    assert ok.returncode == 0 and "2 of 2 tensors match" in ok.stdout
    strict = caffeport_cli("verify", model, "-p", proto, out, "--input", f"data={x}", "--rtol", "0")
    assert strict.returncode == 1 and "FAIL" in strict.stdout  # float32 sums in another order are not bit-equal


def test_verify_refuses_what_is_not_an_onnx_model_in_one_line(tmp_path: Path) -> None:
    model, proto = _det("det1")
    result = caffeport_cli("verify", model, "-p", proto, proto)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "not an ONNX model" in result.stderr and "Traceback" not in result.stderr
    missing = caffeport_cli("verify", model, "-p", proto, tmp_path / "none.onnx")
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_verify_reports_a_wrong_input_size_in_one_line(tmp_path: Path) -> None:
    model, proto = _det("det1")
    out = tmp_path / "det1.onnx"
    assert caffeport_cli("convert", model, "-p", proto, "-f", "onnx", "-o", out).returncode == 0
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 24, 24), np.float32))  # the net runs at 24x24, the static ONNX model does not
    result = caffeport_cli("verify", model, "-p", proto, out, "--input", f"data={x}")
    assert result.returncode == 1 and "onnxruntime failed" in result.stderr and "Traceback" not in result.stderr
