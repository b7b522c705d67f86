"""``caffeport verify`` end to end: exit 0 on a good export, 1 with a FAIL row when one initializer is corrupted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
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


# --- external data (``convert --external-data``): the weights stay in the .onnx.data file, read by onnxruntime only


def _lenet() -> tuple[Path, Path]:
    return models_dir() / "lenet-v2" / "lenet_iter_10000.caffemodel", models_dir() / "lenet-v2" / "lenet.prototxt"


@pytest.fixture(scope="module")
def lenet_external(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet converted with --external-data: ``lenet.onnx`` (a few KB) + ``lenet.onnx.data`` (1.7 MB of weights)."""
    model, proto = _lenet()
    out = tmp_path_factory.mktemp("lenet-external") / "lenet.onnx"
    converted = caffeport_cli("convert", model, "-p", proto, "-f", "onnx", "-o", out, "--external-data")
    assert converted.returncode == 0, converted.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["lenet.onnx", "lenet.onnx.data"]
    return out


def _copy_pair(onnx_path: Path, folder: Path, *, data: bool = True) -> Path:
    folder.mkdir()
    shutil.copy(onnx_path, folder / onnx_path.name)
    if data:
        shutil.copy(f"{onnx_path}.data", folder / f"{onnx_path.name}.data")
    return folder / onnx_path.name


def _ok_rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.endswith("  ok")]


def test_verify_an_external_data_model_from_another_folder(lenet_external: Path, tmp_path: Path) -> None:
    model, proto = _lenet()
    before = sorted(p.name for p in lenet_external.parent.iterdir())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = os.path.relpath(lenet_external, elsewhere)  # the data file is found beside the .onnx, not in cwd
    result = subprocess.run([sys.executable, "-m", "caffeport", "verify", model, "-p", proto, relative,
                             "--random", "1", "--all-layers"], capture_output=True, text=True, cwd=elsewhere,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(_ok_rows(result.stdout)) == 8 and "8 of 8 tensors match within rtol 0.0001" in result.stdout
    assert "FAIL" not in result.stdout and "conv2" in result.stdout and "prob (output)" in result.stdout
    assert sorted(p.name for p in lenet_external.parent.iterdir()) == before  # nothing written beside the model
    assert list(elsewhere.iterdir()) == []  # nor in the working folder


def test_verify_hands_onnxruntime_the_weights_by_reference(lenet_external: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime

    from caffeport.cli import main

    loads: list[dict[str, object]] = []
    real_load = onnx.load

    def spy_load(*args: object, **kwargs: object) -> onnx.ModelProto:
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    sessions: list[tuple[onnx.ModelProto, int, str]] = []
    real_session = onnxruntime.InferenceSession

    def spy_session(model: bytes, options: onnxruntime.SessionOptions, **kwargs: object) -> object:
        proto = onnx.ModelProto()
        proto.ParseFromString(model)
        folder = options.get_session_config_entry("session.model_external_initializers_file_folder_path")
        sessions.append((proto, len(model), folder))
        return real_session(model, options, **kwargs)

    monkeypatch.setattr(onnx, "load", spy_load)
    monkeypatch.setattr(onnxruntime, "InferenceSession", spy_session)
    monkeypatch.chdir(tmp_path)  # not the model's folder
    model, proto = _lenet()
    assert main(["verify", str(model), "-p", str(proto), str(lenet_external), "--random", "2", "--all-layers"]) == 0
    out = capsys.readouterr().out
    assert len(_ok_rows(out)) == 8 and "8 of 8 tensors match" in out

    assert loads and all(kwargs.get("load_external_data") is False for kwargs in loads)
    ((handed, size, folder),) = sessions
    assert folder == str(lenet_external.parent)
    external = {init.name: init for init in handed.graph.initializer
                if init.data_location == onnx.TensorProto.EXTERNAL}
    assert {"conv1/weight", "conv2/weight", "ip1/weight", "ip2/weight"} <= set(external)
    assert all(not init.raw_data and not init.float_data for init in external.values())
    assert {e.key: e.value for e in external["ip1/weight"].external_data}["location"] == "lenet.onnx.data"
    data_size = Path(f"{lenet_external}.data").stat().st_size
    assert data_size > 1_700_000 and size < 20_000  # the bytes given to onnxruntime hold no weights
    assert len(handed.graph.output) > 1  # the intermediate tensors (--all-layers) were added to the copy


def test_the_python_api_needs_the_folder_of_an_external_data_model(lenet_external: Path, tmp_path: Path) -> None:
    from caffeport.errors import CaffeportError
    from caffeport.onnx.verify import load_model, verify
    from caffeport.readers import read

    net = read(*_lenet())
    inputs = {"data": np.random.default_rng(0).uniform(0, 1, (64, 1, 28, 28)).astype(np.float32)}
    model = load_model(lenet_external)
    with pytest.raises(CaffeportError, match=r"external data.*give base_dir"):
        verify(net, model, inputs)
    rows = verify(net, model, inputs, base_dir=lenet_external.parent)
    assert [row.tensor for row in rows] == ["prob"] and rows[0].passed
    escaping = onnx.ModelProto()
    escaping.CopyFrom(model)
    (weight,) = [init for init in escaping.graph.initializer if init.name == "ip1/weight"]
    for entry in weight.external_data:
        if entry.key == "location":
            entry.value = "../lenet.onnx.data"
    with pytest.raises(CaffeportError, match="not a file inside the model's folder"):
        verify(net, escaping, inputs, base_dir=lenet_external.parent)


def test_verify_names_a_missing_or_short_data_file_in_one_line(lenet_external: Path, tmp_path: Path) -> None:
    model, proto = _lenet()
    alone = _copy_pair(lenet_external, tmp_path / "alone", data=False)
    missing = caffeport_cli("verify", model, "-p", proto, alone, "--all-layers")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "Traceback" not in missing.stderr and missing.stdout == ""
    (line,) = [line for line in missing.stderr.splitlines() if line.startswith("caffeport: error:")]
    assert f"{alone}.data" in line and "external data file is missing" in line
    assert missing.stderr.count("\n") == 1  # the error alone: not even the "inputs: --random 0" note came first

    short = _copy_pair(lenet_external, tmp_path / "short")
    with open(f"{short}.data", "r+b") as data:
        data.truncate(4096)
    truncated = caffeport_cli("verify", model, "-p", proto, short)
    assert truncated.returncode == 1 and "Traceback" not in truncated.stderr
    assert truncated.stderr.count("\n") == 1 and f"{short}.data" in truncated.stderr and "too short" in truncated.stderr


def test_verify_fails_an_external_data_model_with_one_corrupted_weight(lenet_external: Path, tmp_path: Path) -> None:
    model, proto = _lenet()
    bad = _copy_pair(lenet_external, tmp_path / "bad")
    header = onnx.load(str(bad), load_external_data=False)
    (weight,) = [init for init in header.graph.initializer if init.name == "conv2/weight"]
    offset = int({e.key: e.value for e in weight.external_data}["offset"])
    with open(f"{bad}.data", "r+b") as data:  # flip every bit of the tensor's first float
        data.seek(offset)
        flipped = bytes(b ^ 0xFF for b in data.read(4))
        data.seek(offset)
        data.write(flipped)
    result = caffeport_cli("verify", model, "-p", proto, bad, "--random", "1", "--all-layers")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if " of " not in line}
    assert "FAIL" in rows["conv2"] and rows["conv1"].endswith("  ok") and rows["pool1"].endswith("  ok")
    assert "FAIL" in rows["prob"]
