"""The keras3 format, weight assignment by name, ``caffeport check`` and ``mean --rgb --hwc``.

Keras models are given as ``tests.keras_models:<function>`` (see that module for
how the spec is found). Every keras3 file is loaded back with Keras' plain
``model.load_weights(path)`` into a fresh copy of the model, never by name, and
must reproduce Caffe's recorded per-layer outputs.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import caffeport
from caffeport.cli import main
from caffeport.errors import CaffeportError, ModelStructureError
from caffeport.keras_model import assign_weights, check_weights_file, load_keras_model
from tests import keras_models
from tests.conftest import models_dir
from tests.proof.reference_nets import (
    B_RESNET_EPS,
    REFERENCE_MODELS,
    add_split_copies,
    assert_all_close,
    reference_outputs,
)
from tests.proof.test_keras_reference import BUILDERS, Mirror, keras_outputs

ROOT = Path(__file__).resolve().parents[1]

#: the tests.keras_models function mirroring each model converted through the CLI here
SPECS = {"a_lenet": "tests.keras_models:lenet", "b_resnet_block": "tests.keras_models:resnet_block"}
#: Caffe's BatchNorm eps per reference model, as the mirrors need them
EPS: Mapping[str, Mapping[str, float]] = {"b_resnet_block": B_RESNET_EPS}


def model_files(name: str) -> tuple[Path, Path]:
    """(caffemodel, deploy prototxt) of a caffe-reference model, failing clearly when the models are missing."""
    folder = models_dir() / "caffe-reference" / name
    caffemodel, prototxt = folder / f"{name}.caffemodel", folder / "deploy.prototxt"
    assert caffemodel.is_file() and prototxt.is_file(), f"caffe-reference model {name} is incomplete in {folder}"
    return caffemodel, prototxt


def model_args(name: str) -> list[str]:
    """The model's files as ``convert`` arguments."""
    caffemodel, prototxt = model_files(name)
    return [str(caffemodel), "-p", str(prototxt)]


def transformed(name: str) -> caffeport.Net:
    """The model read and transformed for the tensorflow backend, as the keras3 exporter gets it."""
    return caffeport.transform(caffeport.read(*model_files(name)), "tensorflow")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fresh_mirror(name: str) -> Mirror:
    return BUILDERS[name](EPS.get(name, {}))


def assert_reproduces_caffe(name: str, mirror: Mirror) -> None:
    expected = reference_outputs(name)
    got = keras_outputs(name, mirror)
    add_split_copies(got, expected)
    assert_all_close(got, expected)


def load_plainly(mirror: Mirror, path: Path) -> None:
    """``load_weights(path)`` without by_name, and proof that every weight changed from its initial value."""
    before = [w.copy() for w in mirror.model.get_weights()]
    mirror.model.load_weights(str(path))
    after = mirror.model.get_weights()
    unchanged = [v.path for v, a, b in zip(mirror.model.weights, before, after) if np.array_equal(a, b)]
    # BatchNormalization's moving statistics may start equal to Caffe's only by chance; none do here
    assert not unchanged, f"load_weights left these at their initial values: {unchanged}"


# ---------------------------------------------------------------- keras3: the good path


@pytest.mark.parametrize("name", sorted(SPECS))
def test_keras3_weights_load_plainly_and_reproduce_caffe(name: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"{name}.weights.h5"
    code, stdout, stderr = cli(capsys, "convert", *model_args(name), "-f", "keras3", "--keras-model", SPECS[name],
                               "-o", str(out))
    assert code == 0, stderr
    assert "warning" not in stdout, stdout
    assert f"wrote {out}" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name], "temporary files were left behind"
    with h5py.File(out, "r") as f:
        assert "layers" in f and "layer_names" not in f.attrs, "not a Keras 3 weights file"
    mirror = fresh_mirror(name)
    load_plainly(mirror, out)
    assert_reproduces_caffe(name, mirror)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_assign_weights_by_name_reproduces_caffe(name: str) -> None:
    """The API on every reference net, including the split-off ``embed_bias`` and custom Scale/Bias layers."""
    net = transformed(name)
    mirror = fresh_mirror(name)
    report = assign_weights(mirror.model, net)
    assert report.clean, str(report)
    assert not report.by_position, str(report)
    weighted = {layer.name for layer in mirror.model.layers if layer.weights}
    assert set(report.assigned) == weighted
    if name == "e_recurrent":
        assert "embed_bias" in report.assigned
    assert_reproduces_caffe(name, mirror)


def test_save_model_writes_a_loadable_keras_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lenet.keras"
    code, _, stderr = cli(capsys, "convert", *model_args("a_lenet"), "-f", "keras3", "--keras-model",
                          SPECS["a_lenet"], "--save-model", "-o", str(out))
    assert code == 0, stderr
    model = keras.saving.load_model(out)
    assert_reproduces_caffe("a_lenet", Mirror(model, {}))


# ---------------------------------------------------------------- keras3: what does not fit


def test_missing_and_extra_layers_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A converted layer the model leaves out is only reported; a Keras layer left unloaded fails the conversion."""
    code, stdout, stderr = cli(capsys, "convert", *model_args("a_lenet"), "-f", "keras3", "--keras-model",
                               "tests.keras_models:lenet_without_ip2", "-o", str(tmp_path / "a.weights.h5"))
    assert code == 0, stderr
    assert "warning: converted layers no Keras layer takes (not written): ip2" in stdout

    args = ["convert", *model_args("a_lenet"), "-f", "keras3", "--keras-model", "tests.keras_models:lenet_with_extra",
            "-o", str(tmp_path / "b.weights.h5"), "-v"]
    code, stdout, stderr = cli(capsys, *args)
    assert code == 1, stdout
    assert stderr.count("\n") == 1 and stderr.startswith("caffeport: error: "), stderr
    assert "extra_fc: no converted weights of that name (it would keep its initial values)" in stderr
    assert not (tmp_path / "b.weights.h5").exists()

    code, stdout, stderr = cli(capsys, *args, "--allow-partial")
    assert code == 0, stderr
    assert "warning: Keras layers left at their initial values (no converted weights of that name): extra_fc" \
        in stdout
    assert "extra_fc: keras-unloaded" in stdout

    with pytest.raises(ModelStructureError, match="extra_fc"):
        caffeport.convert(*model_files("a_lenet"), tmp_path / "c.weights.h5", format="keras3",
                          keras_model="tests.keras_models:lenet_with_extra")
    result = caffeport.convert(*model_files("a_lenet"), tmp_path / "c.weights.h5", format="keras3",
                               keras_model="tests.keras_models:lenet_with_extra", allow_partial=True)
    assert [e.layer for e in result.report if e.action == "keras-unloaded"] == ["extra_fc"]
    assert [e.layer for e in result.report if e.action == "keras-assigned"] == ["conv1", "conv2", "ip1", "ip2"]


def test_a_prelu_missed_by_name_fails_the_conversion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """PReLU's alpha starts at 0: a PReLU the weights miss by name would silently be a ReLU (issue 15.3)."""
    folder = ROOT / "examples" / "mtcnn"
    source = [str(folder / "det1.caffemodel"), "-p", str(folder / "det1.prototxt")]
    model = keras_models.det1_misnamed_prelu()
    assert not model.get_layer("prelu1").get_weights()[0].any(), "the premise: Keras' PReLU alpha starts at 0"
    out = tmp_path / "det1.weights.h5"
    args = ["convert", *source, "-f", "keras3", "--keras-model", "tests.keras_models:det1_misnamed_prelu",
            "-o", str(out)]
    code, stdout, stderr = cli(capsys, *args)
    assert code == 1, stdout
    assert stderr.count("\n") == 1 and stderr.startswith("caffeport: error: "), stderr
    assert "prelu1: no converted weights of that name (it would keep its initial values)" in stderr
    assert "--allow-partial" in stderr
    assert not list(tmp_path.iterdir()), "a failed conversion left files"

    code, stdout, stderr = cli(capsys, *args, "--allow-partial")
    assert code == 0, stderr
    assert "warning: Keras layers left at their initial values (no converted weights of that name): prelu1" in stdout
    assert "warning: converted layers no Keras layer takes (not written): PReLU1" in stdout

    code, stdout, stderr = cli(capsys, "convert", *source, "-f", "keras3", "--keras-model", "tests.keras_models:det1",
                               "-o", str(tmp_path / "good.weights.h5"))
    assert code == 0, stderr
    assert "warning" not in stdout, stdout


def test_batchnorm_built_with_another_eps_fails_the_conversion(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    args = ["convert", *model_args("b_resnet_block"), "-f", "keras3", "--keras-model",
            "tests.keras_models:resnet_block_default_eps", "-o", str(tmp_path / "w.weights.h5")]
    code, _, stderr = cli(capsys, *args)
    assert code == 1
    assert "bn_conv0: epsilon is 0.001 in Keras, 1e-05 in Caffe (build it with epsilon=1e-05)" in stderr
    assert "bn_res1_b" not in stderr, "bn_res1_b's eps is 1e-3 in Caffe too"
    assert not list(tmp_path.iterdir())
    code, stdout, stderr = cli(capsys, *args, "--allow-partial")
    assert code == 0, stderr
    assert "warning: BatchNormalization epsilon differs from Caffe's: bn_conv0: epsilon is 0.001" in stdout


def test_shape_mismatch_fails_unless_allow_partial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "narrow.weights.h5"
    args = ["convert", *model_args("a_lenet"), "-f", "keras3", "--keras-model", "tests.keras_models:lenet_narrow_ip1",
            "-o", str(out)]
    code, _, stderr = cli(capsys, *args)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("caffeport: error: "), stderr
    assert "ip1/kernel: Keras expects (800, 400), the converted weights have (800, 500)" in stderr
    assert "--allow-partial" in stderr
    assert not out.exists() and not list(tmp_path.iterdir()), "a failed conversion left files"

    code, stdout, stderr = cli(capsys, *args, "--allow-partial")
    assert code == 0, stderr
    assert "warning: Keras layers not loaded because shapes differ: ip1/kernel" in stdout
    assert "ip2/kernel: Keras expects (400, 10)" in stdout
    converted = transformed("a_lenet")
    model = keras_models.lenet_narrow_ip1()
    model.load_weights(str(out))
    for layer in ("conv1", "conv2"):
        np.testing.assert_array_equal(model.get_layer(layer).get_weights()[0], converted.layer(layer).blobs[0])


def test_assign_weights_raises_before_setting_anything() -> None:
    net = transformed("a_lenet")
    model = keras_models.lenet_narrow_ip1()
    before = model.get_weights()
    with pytest.raises(ModelStructureError, match="ip1"):
        assign_weights(model, net)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_keras3_needs_a_model_and_a_keras_file_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = cli(capsys, "convert", *model_args("a_lenet"), "-f", "keras3",
                          "-o", str(tmp_path / "w.weights.h5"))
    assert code == 1 and "--keras-model" in stderr
    code, _, stderr = cli(capsys, "convert", *model_args("a_lenet"), "-f", "keras3", "--keras-model", SPECS["a_lenet"],
                          "-o", str(tmp_path / "w.h5"))
    assert code == 1 and ".weights.h5" in stderr
    code, _, stderr = cli(capsys, "convert", *model_args("a_lenet"), "-f", "keras3", "--keras-model", SPECS["a_lenet"],
                          "--save-model", "-o", str(tmp_path / "w.weights.h5"))
    assert code == 1 and ".keras" in stderr
    code, _, stderr = cli(capsys, "convert", *model_args("a_lenet"), "--keras-model", SPECS["a_lenet"],
                          "-o", str(tmp_path / "w.h5"))
    assert code == 1 and "-f keras3" in stderr
    code, _, stderr = cli(capsys, "convert", *model_args("a_lenet"), "-f", "keras3", "--backend", "torch",
                          "--keras-model", SPECS["a_lenet"], "-o", str(tmp_path / "w.weights.h5"))
    assert code == 1 and "does not write the torch backend's layout" in stderr
    assert not list(tmp_path.iterdir())


def test_load_keras_model_errors_say_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        "tests.no_such_module:f": "cannot import 'tests.no_such_module'",
        "tests.keras_models:no_such_function": "has no attribute 'no_such_function'",
        "tests.keras_models:NOT_A_MODEL": "expected a keras.Model",
        "tests.keras_models": "module.path:function",
        str(tmp_path / "missing.keras"): "no such Keras model file",
    }
    for spec, message in cases.items():
        with pytest.raises(CaffeportError, match=message.replace(".", r"\.")):
            load_keras_model(spec)
    assert isinstance(load_keras_model("tests.keras_models:lenet"), keras.Model)


# ---------------------------------------------------------------- caffeport check


@pytest.fixture(scope="module")
def keras_h5(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a_lenet and b_resnet_block converted to keras-h5 once."""
    paths = {}
    for name in SPECS:
        path = tmp_path_factory.mktemp(name) / f"{name}.h5"
        caffeport.convert(*model_files(name), path)
        paths[name] = path
    return paths


def test_check_passes_on_a_matching_file(keras_h5: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    for name, spec in SPECS.items():
        code, stdout, stderr = cli(capsys, "check", str(keras_h5[name]), "--keras-model", spec)
        assert code == 0, stdout + stderr
        assert "every weighted layer matches" in stdout


def test_check_fails_on_another_models_file_naming_the_layers(keras_h5: dict[str, Path],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = cli(capsys, "check", str(keras_h5["b_resnet_block"]), "--keras-model", SPECS["a_lenet"])
    assert code == 1
    assert "leaving them at their initial values (no weights of that name in the file): conv1, conv2, ip1, ip2" \
        in stdout
    assert "layers of the file no Keras layer takes (ignored without a word): conv0, bn_conv0," in stdout

    code, stdout, _ = cli(capsys, "check", str(keras_h5["a_lenet"]), "--keras-model",
                          "tests.keras_models:lenet_narrow_ip1")
    assert code == 1
    assert "shape mismatches (load_weights(by_name=True) raises on them, in Keras 3 and in tf_keras" in stdout
    assert "ip1/bias: Keras expects (400,), the converted weights have (500,)" in stdout
    assert "without a word\n" not in stdout.split("shape mismatches")[0], "the last line must not claim silence"


def test_check_says_what_keras3_by_name_loading_really_does(keras_h5: dict[str, Path]) -> None:
    """The wording's claims, measured: Keras 3 raises on a shape mismatch and skips a missing name silently."""
    with pytest.raises(ValueError, match="ip1"):
        keras_models.lenet_narrow_ip1().load_weights(str(keras_h5["a_lenet"]), by_name=True)
    extra = keras_models.lenet_with_extra()
    before = extra.get_layer("extra_fc").get_weights()
    extra.load_weights(str(keras_h5["a_lenet"]), by_name=True)  # no error, no warning: the silence check reports
    assert all(np.array_equal(a, b) for a, b in zip(before, extra.get_layer("extra_fc").get_weights()))
    report = check_weights_file(keras_h5["a_lenet"], keras_models.lenet_with_extra())
    assert report.unloaded == ["extra_fc"] and not report.mismatches


def test_check_compares_batchnorm_eps_with_the_file(keras_h5: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with h5py.File(keras_h5["b_resnet_block"], "r") as f:
        recorded = json.loads(f.attrs["caffeport"])["batchnorm_eps"]
    assert recorded == pytest.approx(B_RESNET_EPS), "the premise: the file records Caffe's eps values"
    code, stdout, _ = cli(capsys, "check", str(keras_h5["b_resnet_block"]), "--keras-model",
                          "tests.keras_models:resnet_block_default_eps")
    assert code == 1
    assert "BatchNormalization epsilon differs from the one the file records" in stdout
    expected = sorted(name for name, eps in B_RESNET_EPS.items() if eps != 1e-3)
    report = check_weights_file(keras_h5["b_resnet_block"], keras_models.resnet_block_default_eps())
    assert sorted(m.layer for m in report.eps_mismatches) == expected
    assert "bn_conv0: epsilon is 0.001 in Keras, 1e-05 in Caffe" in stdout


def test_check_loads_nothing(keras_h5: dict[str, Path]) -> None:
    model = keras_models.lenet()
    before = model.get_weights()
    report = check_weights_file(keras_h5["a_lenet"], model)
    assert report.clean and report.assigned == ["conv1", "conv2", "ip1", "ip2"]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.fixture(scope="module")
def keras3_lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a_lenet written with -f keras3 for the lenet mirror."""
    path = tmp_path_factory.mktemp("keras3") / "lenet.weights.h5"
    caffeport.convert(*model_files("a_lenet"), path, format="keras3", keras_model=SPECS["a_lenet"])
    return path


def test_check_reads_keras3_weights_files(keras3_lenet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = cli(capsys, "check", str(keras3_lenet), "--keras-model", SPECS["a_lenet"])
    assert code == 0, stdout + stderr
    assert "4 Keras layers with weights matched" in stdout

    # same classes at the same places, other names: Keras 3 loads the file into it without a word
    renamed = keras_models.lenet_renamed_convs()
    renamed.load_weights(str(keras3_lenet))
    code, stdout, _ = cli(capsys, "check", str(keras3_lenet), "--keras-model", "tests.keras_models:lenet_renamed_convs")
    assert code == 1
    assert "conv_a would get the weights saved from 'conv1' (layers/conv2d)" in stdout
    assert "conv_b would get the weights saved from 'conv2' (layers/conv2d_1)" in stdout

    # a shape mismatch and a layer the file lacks: Keras 3 raises, as the report says
    with pytest.raises(ValueError):
        keras_models.lenet_narrow_ip1().load_weights(str(keras3_lenet))
    report = check_weights_file(keras3_lenet, keras_models.lenet_narrow_ip1())
    assert report.loader == "keras3" and report.mismatched_layers == ["ip1", "ip2"]
    assert "shape mismatches (load_weights raises on them): ip1, ip2" in str(report)
    with pytest.raises(ValueError):
        keras_models.lenet_with_extra().load_weights(str(keras3_lenet))
    assert check_weights_file(keras3_lenet, keras_models.lenet_with_extra()).unloaded == ["extra_fc"]

    # a layer of the file the model lacks: ignored without a word
    keras_models.lenet_without_ip2().load_weights(str(keras3_lenet))
    assert check_weights_file(keras3_lenet, keras_models.lenet_without_ip2()).unused == ["ip2"]


def test_check_compares_eps_in_keras3_files(tmp_path: Path) -> None:
    path = tmp_path / "resnet.weights.h5"
    caffeport.convert(*model_files("b_resnet_block"), path, format="keras3", keras_model=SPECS["b_resnet_block"])
    assert check_weights_file(path, keras_models.resnet_block()).clean
    report = check_weights_file(path, keras_models.resnet_block_default_eps())
    assert sorted(m.layer for m in report.eps_mismatches) == sorted(n for n, e in B_RESNET_EPS.items() if e != 1e-3)
    assert not report.mismatches and not report.misplaced


def test_console_script_finds_the_model_module_in_the_working_directory(keras_h5: dict[str, Path]) -> None:
    """The ``caffeport`` script's sys.path starts with its bin directory; the CLI adds the working directory."""
    script = Path(sys.executable).with_name("caffeport")
    assert script.is_file(), f"no caffeport console script beside {sys.executable}: pip install -e . first"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([str(script), "check", str(keras_h5["a_lenet"]), "--keras-model", SPECS["a_lenet"]],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    elsewhere = subprocess.run([str(script), "check", str(keras_h5["a_lenet"]), "--keras-model", SPECS["a_lenet"]],
                               capture_output=True, text=True, cwd=keras_h5["a_lenet"].parent, env=env)
    assert elsewhere.returncode == 1
    assert "cannot import 'tests.keras_models'" in elsewhere.stderr


# ---------------------------------------------------------------- no TensorFlow unless asked for


def test_keras_h5_conversion_does_not_import_tensorflow(tmp_path: Path) -> None:
    out = tmp_path / "w.h5"
    code = (
        "import sys; import caffeport.cli, caffeport.conversion; "
        f"code = caffeport.cli.main({['convert', *model_args('a_lenet'), '-o', str(out)]!r}); "
        "assert code == 0, code; "
        "leaked = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules); "
        "assert not leaked, f'imported {leaked}'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.is_file()


# ---------------------------------------------------------------- mean --rgb --hwc


@pytest.mark.parametrize("mean", ["cifar10/mean.binaryproto", "ilsvrc12/imagenet_mean.binaryproto"])
def test_mean_rgb_hwc(mean: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = models_dir() / "means" / mean
    blob = np.asarray(caffeport.read_blob(source), dtype=np.float32)[0]  # (C, H, W), BGR
    assert blob.shape[0] == 3
    outputs = {}
    for flags in ([], ["--rgb"], ["--hwc"], ["--rgb", "--hwc"]):
        out = tmp_path / f"mean{''.join(flags)}.npy"
        code, _, stderr = cli(capsys, "mean", str(source), "-o", str(out), *flags)
        assert code == 0, stderr
        outputs[tuple(flags)] = np.load(out)
    np.testing.assert_array_equal(outputs[()], blob)
    np.testing.assert_array_equal(outputs[("--rgb",)], blob[::-1])
    np.testing.assert_array_equal(outputs[("--hwc",)], blob.transpose(1, 2, 0))
    both = outputs[("--rgb", "--hwc")]
    assert both.shape == (blob.shape[1], blob.shape[2], 3)
    np.testing.assert_array_equal(both, blob.transpose(1, 2, 0)[:, :, ::-1])
    np.testing.assert_array_equal(both[..., 0], blob[2])  # R comes from Caffe's third (red) channel


def test_python_api_refuses_a_keras3_name_keras_would_misread(tmp_path: Path) -> None:
    folder = models_dir() / "caffe-reference" / "a_lenet"
    with pytest.raises(CaffeportError, match=r"\*\.weights\.h5"):
        caffeport.convert(folder / "a_lenet.caffemodel", folder / "deploy.prototxt", tmp_path / "w.h5",
                          format="keras3", keras_model="tests.keras_models:lenet")
    assert list(tmp_path.iterdir()) == []
