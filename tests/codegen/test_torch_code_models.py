"""``-f torch-code`` on every shared model: generate, ``ruff check`` the model.py, run it in a fresh interpreter
that cannot import caffeport, and compare every output and every intermediate top with caffeport.run at 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from tests.codegen.codegen_helpers import ruff_check, run_generated
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


def test_yunet_with_its_detection_output_matches_the_reference_on_a_photo(tmp_path: Path) -> None:
    """yunet whole: PriorBox a constant, DetectionOutput the file's `caffe_detection_output`; on the astronaut
    photo every top, the detection rows included, equals the reference's (the face found, ids and labels exact)."""
    from tests.onnx.test_onnx_ssd import assert_rows_equal, astronaut

    net, result = _generate(YUNET, tmp_path / "model")
    assert not [w for w in result.warnings if "torch-code" in w]  # nothing stubbed
    (head,) = [layer for layer in net.layers if layer.type == "DetectionOutput"]
    source = (tmp_path / "model" / "model.py").read_text()
    assert "PriorBoxes(" in source and "caffe_detection_output(" in source
    inputs = {"data": astronaut()}
    got, plain = run_generated(tmp_path / "model", inputs, list(net.inputs))
    key = f"{head.name}/{head.tops[0]}"
    want = caffeport.run(net, inputs, all_layers=True)
    assert want[key].shape[2] > 0 and want[key][0, 0, 0, 1] != -1  # a real detection to compare
    assert_rows_equal(got.pop(key), want[key])
    assert_rows_equal(got.pop(head.tops[0]), want[key])  # the net's output, as the plain call returns it
    compare_with_reference(net, got, plain, inputs, skip={head.name})


def test_yunet_detection_output_keeps_caffes_order_among_tied_scores(tmp_path: Path) -> None:
    """A black image: every box scores exactly 0.5 (34 kept), so the rows' order is the stable sort's and NMS's
    among ties; equal to the reference's, row for row. (The -1 rows of no detection: the layer tests.)"""
    net, _ = _generate(YUNET, tmp_path / "model")
    (head,) = [layer for layer in net.layers if layer.type == "DetectionOutput"]
    key = f"{head.name}/{head.tops[0]}"
    inputs = {"data": np.zeros(net.inputs["data"], np.float32)}
    got, _ = run_generated(tmp_path / "model", inputs, list(net.inputs))
    want = caffeport.run(net, inputs, all_layers=True)[key]
    assert want.shape[2] > 1 and np.all(want[0, 0, :, 2] == 0.5)
    np.testing.assert_array_equal(got[key], want)


def _recurrent_inputs(net: caffeport.Net, seed: int) -> dict[str, np.ndarray]:
    """Embed indices in [0, input_dim) and a ``cont`` that restarts every stream at t = 0 and once more later."""
    rng = np.random.default_rng(seed)
    (embed,) = [layer for layer in net.layers if layer.type == "Embed"]
    steps, streams = net.inputs["cont"]
    cont = np.ones((steps, streams), np.float32)
    cont[0] = 0
    cont[rng.integers(1, steps), rng.integers(0, streams)] = 0
    data = rng.integers(0, int(embed.param("embed_param")["input_dim"]), size=net.inputs["data"])
    return {"data": data.astype(np.float32), "cont": cont}


@pytest.mark.parametrize("seed", [0, 1])
def test_recurrent_net_embed_and_lstm_with_cont_restarts_match(seed: int, tmp_path: Path) -> None:
    """e_recurrent (Caffe-written: Embed, LSTM with ``cont``, InnerProduct) generated whole and exact."""
    net, result = _generate(RECURRENT, tmp_path / "model")
    assert not [w for w in result.warnings if "torch-code" in w]
    source = (tmp_path / "model" / "model.py").read_text()
    assert "CaffeEmbed(" in source and "CaffeLSTM(" in source
    inputs = _recurrent_inputs(net, seed)
    got, plain = run_generated(tmp_path / "model", inputs, list(net.inputs))
    assert compare_with_reference(net, got, plain, inputs) >= len(net.layers)  # every top, the inputs too


def test_an_lstm_that_ignores_cont_fails_the_comparison(tmp_path: Path) -> None:
    """The check can fail: PyTorch's own nn.LSTM semantics (no restart where cont is 0) differ from Caffe's."""
    net, _ = _generate(RECURRENT, tmp_path / "model")
    patch = ("import model\n"
             "forward = model.CaffeLSTM.forward\n"
             "model.CaffeLSTM.forward = lambda self, x, cont, *s: forward(self, x, torch.ones_like(cont), *s)\n")
    inputs = _recurrent_inputs(net, 0)
    got, _ = run_generated(tmp_path / "model", inputs, list(net.inputs), patch=patch)
    want = caffeport.run(net, inputs, all_layers=True)
    (lstm,) = [layer for layer in net.layers if layer.type == "LSTM"]
    key = f"{lstm.name}/{lstm.tops[0]}"
    with pytest.raises(AssertionError, match=f"{key}: relative error"):
        assert_close(key, got[key], want[key])


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
