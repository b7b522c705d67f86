"""The BatchNorm eps hint speaks of the framework the output is for, and only of values a user must set."""

from __future__ import annotations

from pathlib import Path

import caffeport
from caffeport.conversion import eps_hint
from tests.conftest import models_dir

#: b_resnet_block's BatchNorm eps values (deploy.prototxt): one layer uses 1e-3, the others Caffe's 1e-5
EPS = {"bn_conv0": 1e-5, "bn_res1_a": 1e-5, "bn_res1_b": 1e-3, "bn_res2_a": 1e-5, "bn_res2_b": 1e-5,
       "bn_res2_proj": 1e-5}


def _summary(tmp_path: Path, format: str, suffix: str) -> str:
    folder = models_dir() / "caffe-reference" / "b_resnet_block"
    result = caffeport.convert(folder / "b_resnet_block.caffemodel", folder / "deploy.prototxt",
                               tmp_path / f"w{suffix}", format=format)
    assert result.batchnorm_eps == EPS
    return result.summary()


def test_keras_users_are_told_every_value(tmp_path: Path) -> None:
    line = next(x for x in _summary(tmp_path, "keras-h5", ".h5").splitlines() if x.startswith("BatchNorm eps"))
    assert "Keras's default is 0.001" in line and "1e-05 for" in line and "BatchNormalization(epsilon=...)" in line
    assert "bn_res1_b" not in line.split("1e-05 for")[1].split(";")[0]  # 1e-3 equals Keras' default: not listed


def test_pytorch_users_are_told_only_the_layer_that_differs(tmp_path: Path) -> None:
    line = next(x for x in _summary(tmp_path, "safetensors", ".safetensors").splitlines()
                if x.startswith("BatchNorm eps"))
    assert line.startswith("BatchNorm eps: 0.001 for bn_res1_b: PyTorch's default is 1e-05")
    assert "nn.BatchNorm2d(C, eps=...)" in line and "Keras" not in line


def test_values_equal_to_the_default_need_no_action() -> None:
    assert eps_hint({"bn": 1e-5}, "flax") == "BatchNorm eps: 1e-05 everywhere, Flax's default: nothing to set"
    assert "RetinaFace" not in eps_hint({"bn": 2e-5}, "safetensors")
    assert eps_hint({"bn": 2e-5, "bn2": 2e-5}, "safetensors").startswith(
        "BatchNorm eps: 2e-05: PyTorch's default is 1e-05, so build every BatchNorm with")
    assert eps_hint({"bn": 2e-5}, "npz") == "BatchNorm eps: 2e-05 (stored with the weights, batchnorm_eps)"


def test_generated_code_sets_every_eps_itself(tmp_path: Path) -> None:
    line = next(x for x in _summary(tmp_path, "torch-code", "").splitlines() if x.startswith("BatchNorm eps"))
    assert line == "BatchNorm eps: 1e-05, 0.001, set in the generated model.py: nothing to set"
    code = (tmp_path / "w" / "model.py").read_text()
    assert code.count("eps=0.001") == 1 and code.count("eps=1e-05") == 5  # the claim holds: each layer's own value


def test_each_format_says_where_its_users_meet_the_eps() -> None:
    """The hint comes from the format's own registration (`Exporter.eps`): every code format sets Caffe's eps in
    its model.py, Flax's code included; a format without one stores the values with the weights."""
    for name in ("torch-code", "keras-code", "flax-code"):
        assert eps_hint({"bn": 2e-5}, name) == "BatchNorm eps: 2e-05, set in the generated model.py: nothing to set"
    assert "Keras's default is 0.001" in eps_hint({"bn": 1e-5}, "keras3")
    assert eps_hint({"bn": 1e-5}, "caffe") == "BatchNorm eps: 1e-05 (stored with the weights, batchnorm_eps)"
