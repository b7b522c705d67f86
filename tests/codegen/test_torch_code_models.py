"""``-f torch-code`` on every shared model: generate, ``ruff check`` the model.py, run it in a fresh interpreter
that cannot import caffeport, and compare every output and every intermediate top with caffeport.run at 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.ir import Net
from tests.codegen.codegen_helpers import ruff_check, run_generated, run_generated_failure
from tests.conftest import models_dir
from tests.proof.reference_nets import assert_close

#: (caffemodel, prototxt) under the shared models folder
SHARED = {
    "mtcnn-det1": ("mtcnn/det1.caffemodel", "mtcnn/det1.prototxt"),
    "mtcnn-det2": ("mtcnn/det2.caffemodel", "mtcnn/det2.prototxt"),
    "mtcnn-det3": ("mtcnn/det3.caffemodel", "mtcnn/det3.prototxt"),
    "mtcnn-det4": ("mtcnn/det4.caffemodel", "mtcnn/det4.prototxt"),
    "lenet-v1": ("lenet-v1/lenet_iter_10000.caffemodel", "lenet-v1/lenet.prototxt"),
    "lenet-v2": ("lenet-v2/lenet_iter_10000.caffemodel", "lenet-v2/lenet.prototxt"),
    "cifar10-v1": ("cifar10-quick-v1/cifar10_quick_iter_5000.caffemodel", "cifar10-quick-v1/cifar10_quick.prototxt"),
    "cifar10-v2": ("cifar10-quick-v2-hdf5/cifar10_quick_iter_4000.caffemodel",
                   "cifar10-quick-v2-hdf5/cifar10_quick.prototxt"),
    "cifar10-v2-hdf5": ("cifar10-quick-v2-hdf5/cifar10_quick_iter_5000.caffemodel.h5",
                        "cifar10-quick-v2-hdf5/cifar10_quick.prototxt"),
    "resnet50-head-bn": ("resnet50-head-bn/test.caffemodel", "resnet50-head-bn/test.prototxt"),
    "hyperlpr-fp32": ("hyperlpr-finemapping/fp32/HorizonalFinemapping.caffemodel",
                      "hyperlpr-finemapping/fp32/HorizonalFinemapping.prototxt"),
    "hyperlpr-fp16": ("hyperlpr-finemapping/fp16/HorizonalFinemapping.caffemodel",
                      "hyperlpr-finemapping/fp16/HorizonalFinemapping.prototxt"),
    "hyperlpr-segfree": ("hyperlpr-segfree-fp16/SegmenationFree-Inception.caffemodel",
                         "hyperlpr-segfree-fp16/SegmenationFree-Inception.prototxt"),
    "ultraface": ("ultraface-rfb320/RFB-320.caffemodel", "ultraface-rfb320/RFB-320.prototxt"),
    "opencv-conv": ("opencv-dnn-layers/layer_convolution.caffemodel", "opencv-dnn-layers/layer_convolution.prototxt"),
    "opencv-deconv": ("opencv-dnn-layers/layer_deconvolution.caffemodel",
                      "opencv-dnn-layers/layer_deconvolution.prototxt"),
    "opencv-ip": ("opencv-dnn-layers/layer_inner_product.caffemodel", "opencv-dnn-layers/layer_inner_product.prototxt"),
    "a_lenet": ("caffe-reference/a_lenet/a_lenet.caffemodel", "caffe-reference/a_lenet/deploy.prototxt"),
    "a_lenet_v1": ("caffe-reference/a_lenet_v1/a_lenet_v1.caffemodel", "caffe-reference/a_lenet_v1/deploy_v1.prototxt"),
    "b_resnet_block": ("caffe-reference/b_resnet_block/b_resnet_block.caffemodel",
                       "caffe-reference/b_resnet_block/deploy.prototxt"),
    "c_deconv_prelu": ("caffe-reference/c_deconv_prelu/c_deconv_prelu.caffemodel",
                       "caffe-reference/c_deconv_prelu/deploy.prototxt"),
    "d_grouped": ("caffe-reference/d_grouped/d_grouped.caffemodel", "caffe-reference/d_grouped/deploy.prototxt"),
}
YUNET = ("yunet-libfacedetection/yufacedetectnet-open-v1.caffemodel",
         "yunet-libfacedetection/yufacedetectnet-open-v1.prototxt")
RECURRENT = ("caffe-reference/e_recurrent/e_recurrent.caffemodel", "caffe-reference/e_recurrent/deploy.prototxt")


def _files(pair: tuple[str, str]) -> tuple[Path, Path]:
    return models_dir() / pair[0], models_dir() / pair[1]


def _inputs(net: caffeport.Net, seed: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1.0, 1.0, size=shape).astype(np.float32) for k, shape in net.inputs.items()}


def _generate(pair: tuple[str, str], out: Path) -> tuple[caffeport.Net, caffeport.ConvertResult]:
    model, proto = _files(pair)
    result = caffeport.convert(model, proto, out, format="torch-code")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.py", "weights.safetensors"]
    ruff_check(out / "model.py")
    return caffeport.read(model, proto), result


def _folded_batchnorms(net: caffeport.Net) -> set[str]:
    """BatchNorm layers the torch backend folds a Scale into: their own output is not computed alone."""
    converted = caffeport.transform(net, "torch")
    return {layer.name for layer in converted.layers if layer.type == "BatchNorm" and "fused_scale" in layer.params}


def compare_with_reference(net: caffeport.Net, got: dict[str, np.ndarray], plain: list[str],
                           inputs: dict[str, np.ndarray], skip: set[str] = frozenset()) -> int:
    """Every output top and every ``<layer>/<top>`` of caffeport.run, but the folded BatchNorms' and ``skip``."""
    want = caffeport.run(net, inputs, all_layers=True)
    outputs = caffeport.forward.net_outputs(net)
    assert plain == sorted(outputs)
    folded = _folded_batchnorms(net)
    expected = {k for k in want if k.partition("/")[0] not in folded | skip}
    assert set(got) == expected, (sorted(set(got) - expected), sorted(expected - set(got)))
    for key in sorted(expected):
        assert_close(key, got[key], want[key])
    return len(expected)


@pytest.mark.parametrize("name", sorted(SHARED))
def test_generated_model_matches_the_reference_top_by_top(name: str, tmp_path: Path) -> None:
    net, result = _generate(SHARED[name], tmp_path / "model")
    assert not [w for w in result.warnings if "torch-code" in w]  # nothing stubbed
    inputs = _inputs(net)
    got, plain = run_generated(tmp_path / "model", inputs, list(net.inputs))
    compared = compare_with_reference(net, got, plain, inputs)
    assert compared >= len(net.layers) - len(_folded_batchnorms(net))


def test_yunet_detection_output_is_a_stub_and_everything_before_it_is_exact(tmp_path: Path) -> None:
    """DetectionOutput raises NotImplementedError naming the layer; replaced, every other top matches."""
    net, result = _generate(YUNET, tmp_path / "model")
    heads = [layer.name for layer in net.layers if layer.type == "DetectionOutput"]
    assert len(heads) == 1
    (stub,) = [w for w in result.warnings if "torch-code" in w]
    assert f"{heads[0]!r} (DetectionOutput)" in stub and "1 layer(s)" in stub
    source = (tmp_path / "model" / "model.py").read_text()
    assert "PriorBoxes(" in source and "Normalize(" in source
    inputs = _inputs(net)
    error = run_generated_failure(tmp_path / "model", inputs, list(net.inputs))
    assert "NotImplementedError" in error and f"{heads[0]!r} (DetectionOutput)" in error
    assert "detection_output_param" in error  # its params are named
    # the stub, swapped for a module that returns zeros, lets the forward finish: every other top is compared
    attr = heads[0].replace("-", "_")
    patch = (f"class Zero(torch.nn.Module):\n    def forward(self, *b):\n        return torch.zeros(1)\n"
             f"net.{attr} = Zero()\n")
    got, _ = run_generated(tmp_path / "model", inputs, list(net.inputs), patch=patch)
    head_keys = {k for k in got if k.partition("/")[0] in heads}
    assert head_keys
    for key in head_keys:
        del got[key]
    cut = Net(name=net.name, layers=[la for la in net.layers if la.name not in heads], inputs=net.inputs,
              caffemodel_path=net.caffemodel_path, prototxt_path=net.prototxt_path)
    reference = caffeport.run(cut, inputs, all_layers=True)
    expected = {k for k in reference if "/" in k}
    assert set(got) >= expected
    for key in sorted(expected):
        assert_close(key, got[key], reference[key])


def test_recurrent_layers_are_stubs_with_their_weights_kept(tmp_path: Path) -> None:
    """e_recurrent: Embed and LSTM are not generated yet; the model still loads (strictly) with all blobs."""
    from safetensors.numpy import load_file

    net, result = _generate(RECURRENT, tmp_path / "model")
    (stub,) = [w for w in result.warnings if "torch-code" in w]
    for layer in net.layers:
        if layer.type in ("Embed", "LSTM"):
            assert f"{layer.name!r} ({layer.type})" in stub
    tensors = load_file(str(tmp_path / "model" / "weights.safetensors"))
    weighted = [layer for layer in net.layers if layer.blobs]
    assert {key.partition(".")[0] for key in tensors} == {layer.name for layer in weighted}
    assert sum(v.size for v in tensors.values()) >= net.num_weights
    inputs = {k: np.zeros(shape, np.float32) for k, shape in net.inputs.items()}
    error = run_generated_failure(tmp_path / "model", inputs, list(net.inputs))
    first = next(layer for layer in net.layers if layer.type in ("Embed", "LSTM"))
    assert "NotImplementedError" in error and f"{first.name!r} ({first.type})" in error


@pytest.mark.parametrize("size", [(31, 47), (12, 13), (100, 77)])
def test_fully_convolutional_pnet_runs_at_other_sizes(size: tuple[int, int], tmp_path: Path) -> None:
    """Pooling sizes are Caffe's rule computed at run time, so PNet works at any input size >= 12, as in Caffe."""
    net, _ = _generate(SHARED["mtcnn-det1"], tmp_path / "model")
    inputs = {"data": np.random.default_rng(2).uniform(-1, 1, size=(2, 3, *size)).astype(np.float32)}
    got, _ = run_generated(tmp_path / "model", inputs, ["data"])
    want = caffeport.run(net, inputs, all_layers=True)
    assert set(got) == set(want)
    for key in sorted(want):
        assert_close(key, got[key], want[key])


def test_the_comparison_catches_pytorch_pooling_in_place_of_caffes(tmp_path: Path) -> None:
    """The check can fail: PyTorch's ceil_mode pooling dividing every AVE window by the whole kernel (the usual port)
    gives CIFAR-10's clipped last windows other values than Caffe's."""
    net, _ = _generate(SHARED["cifar10-v2"], tmp_path / "model")
    patch = ("import model\n"
             "def naive(x, method, kernel, stride, pad, ceil=True):\n"
             "    if method == 'MAX':\n"
             "        return torch.nn.functional.max_pool2d(x, kernel, stride, pad, ceil_mode=True)\n"
             "    return torch.nn.functional.avg_pool2d(x, kernel, stride, pad, ceil_mode=True,\n"
             "                                          divisor_override=kernel[0] * kernel[1])\n"
             "model.caffe_pool2d = naive\n")
    inputs = _inputs(net)
    got, _ = run_generated(tmp_path / "model", inputs, list(net.inputs), patch=patch)
    want = caffeport.run(net, inputs, all_layers=True)
    assert_close("pool1/pool1", got["pool1/pool1"], want["pool1/pool1"])  # MAX: PyTorch's ceil_mode agrees here
    with pytest.raises(AssertionError, match="pool2/pool2: relative error"):
        assert_close("pool2/pool2", got["pool2/pool2"], want["pool2/pool2"])
