"""Weights checked against the layers that read them, on real models edited the way the defects were found.

Caffe's ``CopyTrainedLayersFrom`` refuses a blob count or shape that differs
from what the layer's ``LayerSetUp`` creates; caffeport used to merge by name
and write whatever it found. Each case below edits a shared model (its
prototxt as text, or its blobs through caffeport's own caffemodel writer) and
checks that ``inspect`` and ``convert`` give the same verdict: an error naming
the layer, the blob and both shapes, exit 1, nothing written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import ModelStructureError
from caffeport.exporters import ExportOptions, load_exporters
from caffeport.layers.blobs import blob_problems
from tests.conftest import models_dir


def _edited_prototxt(tmp_path: Path, model: str, old: str, new: str) -> Path:
    source = models_dir() / model
    text = source.read_text()
    assert old in text, f"the edit of {model} must apply: {old!r} not found"
    edited = tmp_path / source.name
    edited.write_text(text.replace(old, new, 1))
    return edited


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _assert_refused(model: Path, prototxt: Path | None, tmp_path: Path, *needles: str) -> None:
    """inspect prints its table, marks the layer and exits 1; convert exits 1 naming it and writes nothing."""
    inspected = _cli("inspect", model, *(["-p", prototxt] if prototxt else []))
    assert inspected.returncode == 1, inspected.stdout + inspected.stderr
    assert "BLOBS DO NOT FIT" in inspected.stdout
    out = tmp_path / "out.h5"
    converted = _cli("convert", model, *(["-p", prototxt] if prototxt else []), "-o", out)
    assert converted.returncode == 1, converted.stdout + converted.stderr
    assert "Traceback" not in converted.stderr
    for needle in needles:
        assert needle in converted.stderr, converted.stderr
        assert needle in inspected.stdout, inspected.stdout
    assert not out.exists()
    assert list(tmp_path.glob(".*out*")) == []  # no temporary left behind either


def _rewritten(tmp_path: Path, model: str, edit: dict[tuple[str, int], np.ndarray]) -> Path:
    """The shared caffemodel with some blobs replaced, written by caffeport's caffemodel writer."""
    net = caffeport.read(models_dir() / model)
    for (layer, index), blob in edit.items():
        net.layer(layer).blobs[index] = blob
    path = tmp_path / Path(model).name
    load_exporters("caffe")["caffe"].write(net, path, ExportOptions())
    return path


# ----------------------------------------------------------------------------- prototxt edits


def test_num_output_that_disagrees_with_the_blob(tmp_path: Path) -> None:
    proto = _edited_prototxt(tmp_path, "mtcnn/det1.prototxt", "num_output: 10", "num_output: 16")
    _assert_refused(models_dir() / "mtcnn/det1.caffemodel", proto, tmp_path, "'conv1'", "10x3x3x3", "16x3x3x3")


def test_group_1_on_a_depthwise_blob(tmp_path: Path) -> None:
    proto = _edited_prototxt(tmp_path, "ultraface-rfb320/RFB-320.prototxt", "group: 16", "group: 1")
    net = caffeport.read(models_dir() / "ultraface-rfb320/RFB-320.caffemodel", proto)
    (name, problem), *_ = blob_problems(net).items()
    assert "16x1x3x3" in problem and "16x16x3x3" in problem
    _assert_refused(models_dir() / "ultraface-rfb320/RFB-320.caffemodel", proto, tmp_path, name)


def test_kernel_size_that_disagrees_with_the_blob(tmp_path: Path) -> None:
    """RNet's conv3 is 2x2; a prototxt saying 3 would make Caffe refuse the weights."""
    proto = _edited_prototxt(tmp_path, "mtcnn/det2.prototxt", "kernel_size: 2", "kernel_size: 3")
    _assert_refused(models_dir() / "mtcnn/det2.caffemodel", proto, tmp_path, "'conv3'", "64x48x2x2", "64x48x3x3")


def test_a_sibling_models_prototxt_is_refused(tmp_path: Path) -> None:
    """ONet's weights under RNet's prototxt: names match (conv1, conv2, conv3...), shapes do not."""
    net = caffeport.read(models_dir() / "mtcnn/det3.caffemodel", models_dir() / "mtcnn/det2.prototxt")
    assert net.match is not None and "conv1" not in net.match.missing_weights  # names alone would say "fine"
    assert blob_problems(net)
    _assert_refused(models_dir() / "mtcnn/det3.caffemodel", models_dir() / "mtcnn/det2.prototxt", tmp_path,
                    "'conv1'", "32x3x3x3", "28x3x3x3")


def test_weights_on_a_weightless_type(tmp_path: Path) -> None:
    """The caffemodel says Convolution, the prototxt ReLU: not 'an unknown type passed through'."""
    text = (models_dir() / "mtcnn/det1.prototxt").read_text()
    old = '  name: "conv2"\n  type: "Convolution"'
    assert old in text
    proto = tmp_path / "det1.prototxt"
    # conv2 becomes an in-place ReLU: structurally fine, but its weights have nowhere to go
    proto.write_text(text.replace(old, '  name: "conv2"\n  type: "ReLU"', 1).replace(
        'bottom: "pool1"\n  top: "conv2"', 'bottom: "pool1"\n  top: "pool1"', 1))
    net = caffeport.read(models_dir() / "mtcnn/det1.caffemodel", proto)
    assert "ReLU has no learned blobs" in blob_problems(net)["conv2"]
    with pytest.raises(ModelStructureError, match="ReLU has no learned blobs"):
        caffeport.convert(models_dir() / "mtcnn/det1.caffemodel", proto, tmp_path / "w.h5")
    assert not (tmp_path / "w.h5").exists()


def test_an_input_size_that_makes_the_dense_kernel_not_fit(tmp_path: Path) -> None:
    """LeNet at 32x32: ip1 would need 50*5*5 = 1250 inputs, its blob has 800; Caffe refuses, so do inspect, convert."""
    proto = _edited_prototxt(tmp_path, "lenet-v2/lenet.prototxt", "dim: 28 dim: 28", "dim: 32 dim: 32")
    _assert_refused(models_dir() / "lenet-v2/lenet_iter_10000.caffemodel", proto, tmp_path, "'ip1'", "500x800",
                    "500x1250")


@pytest.mark.parametrize("dims", ["input_dim: -3", "input_dim: 0"])
def test_zero_or_negative_input_dims_are_an_error_at_read_time(tmp_path: Path, dims: str) -> None:
    proto = _edited_prototxt(tmp_path, "mtcnn/det1.prototxt", "input_dim: 3", dims)
    with pytest.raises(ModelStructureError, match="every dim must be positive"):
        caffeport.read(models_dir() / "mtcnn/det1.caffemodel", proto)
    result = _cli("inspect", models_dir() / "mtcnn/det1.caffemodel", "-p", proto)
    assert result.returncode == 1 and "every dim must be positive" in result.stderr


def test_absurd_input_dims_are_an_error_at_read_time(tmp_path: Path) -> None:
    proto = _edited_prototxt(tmp_path, "mtcnn/det1.prototxt", "input_dim: 12\ninput_dim: 12",
                             "input_dim: 1000000\ninput_dim: 1000000")
    with pytest.raises(ModelStructureError, match="more than the 2,147,483,647 Caffe allows"):
        caffeport.read(models_dir() / "mtcnn/det1.caffemodel", proto)


# ----------------------------------------------------------------------------- blob edits


@pytest.mark.parametrize(
    ("model", "prototxt", "edit", "needles"),
    [
        # a conv bias of 9 for num_output 10 (PNet's conv1)
        ("mtcnn/det1.caffemodel", "mtcnn/det1.prototxt", {("conv1", 1): np.zeros(9, np.float32)},
         ["'conv1'", "blob 1 is 9", "needs 10"]),
        # BatchNorm mean (3,) beside variance (64,)
        ("resnet50-head-bn/test.caffemodel", "resnet50-head-bn/test.prototxt",
         {("bn_conv1", 0): np.zeros(3, np.float32)}, ["'bn_conv1'", "blob 0 is 3", "needs 64"]),
        # Scale gamma 5 / beta 2 for the 64 channels its BatchNorm normalizes (fused if not checked)
        ("resnet50-head-bn/test.caffemodel", "resnet50-head-bn/test.prototxt",
         {("scale_conv1", 0): np.ones(5, np.float32), ("scale_conv1", 1): np.zeros(2, np.float32)},
         ["'scale_conv1'", "blob 0 is 5", "needs 64"]),
        # PReLU alpha of 7 for 10 channels
        ("mtcnn/det1.caffemodel", "mtcnn/det1.prototxt", {("PReLU1", 0): np.ones(7, np.float32)},
         ["'PReLU1'", "blob 0 is 7", "needs 10"]),
        # LSTM W_hc 64x5 for H = 16
        ("caffe-reference/e_recurrent/e_recurrent.caffemodel", "caffe-reference/e_recurrent/deploy.prototxt",
         {("lstm", 2): np.zeros((64, 5), np.float32)}, ["'lstm'", "blob 2 is 64x5", "needs 64x16"]),
        # InnerProduct bias 3 for num_output 10 (LeNet's ip2)
        ("lenet-v2/lenet_iter_10000.caffemodel", "lenet-v2/lenet.prototxt", {("ip2", 1): np.zeros(3, np.float32)},
         ["'ip2'", "blob 1 is 3", "needs 10"]),
    ],
    ids=["conv-bias", "batchnorm-mean", "scale-fused-into-batchnorm", "prelu-alpha", "lstm-w_hc", "ip-bias"],
)
def test_blobs_that_do_not_fit_are_refused(
    tmp_path: Path, model: str, prototxt: str, edit: dict[tuple[str, int], np.ndarray], needles: list[str]
) -> None:
    edited = _rewritten(tmp_path, model, edit)
    _assert_refused(edited, models_dir() / prototxt, tmp_path, *needles)


def test_legacy_4d_blobs_fit_their_layers() -> None:
    """V1 files store (1, 1, 1, C) biases and (1, 1, out, in) matrices: Caffe's LegacyShape comparison accepts them."""
    for model, proto in [
        ("lenet-v1/lenet_iter_10000.caffemodel", "lenet-v1/lenet.prototxt"),
        ("cifar10-quick-v1/cifar10_quick_iter_5000.caffemodel", "cifar10-quick-v1/cifar10_quick.prototxt"),
    ]:
        net = caffeport.read(models_dir() / model, models_dir() / proto)
        assert any(b.ndim == 4 and b.shape[:3] == (1, 1, 1) for la in net for b in la.blobs), model
        assert blob_problems(net) == {}, model


def test_every_shared_model_fits_its_prototxt() -> None:
    root = models_dir()
    pairs = [(p.with_suffix(".caffemodel"), p) for p in root.glob("*/*.prototxt")
             if p.with_suffix(".caffemodel").is_file()]
    pairs += [(p.parent / f"{p.parent.name}.caffemodel", p) for p in root.glob("caffe-reference/*/deploy.prototxt")]
    assert len(pairs) >= 12
    for model, proto in pairs:
        assert blob_problems(caffeport.read(model, proto)) == {}, model
