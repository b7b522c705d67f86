"""``-f onnx`` on every shared model: convert, check_model(full_check), run in onnxruntime, compare EVERY named
intermediate tensor with caffeport.run(all_layers=True) at 1e-4 relative; Caffe's own outputs where there are some."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import caffeport
from caffeport.errors import CaffeportError, UnsupportedModelError
from caffeport.onnx import to_onnx
from tests.conftest import models_dir
from tests.onnx.onnx_helpers import check_against_reference, ort_all, tensor_map
from tests.proof.reference_nets import REFERENCE_MODELS, assert_close, reference_inputs, reference_outputs

ROOT = Path(__file__).resolve().parents[2]

#: (caffemodel, prototxt) under the shared models folder, every model whose layers are all lowered
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
}


def _files(name: str) -> tuple[Path, Path]:
    if name in REFERENCE_MODELS:
        folder = models_dir() / "caffe-reference" / name
        return folder / f"{name}.caffemodel", folder / "deploy.prototxt"
    model, proto = SHARED[name]
    return models_dir() / model, models_dir() / proto


def _inputs(net: caffeport.Net, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-1.0, 1.0, size=shape).astype(np.float32) for k, shape in net.inputs.items()}


def _convert(name: str, out: Path) -> tuple[caffeport.Net, onnx.ModelProto]:
    """Through caffeport.convert (the exporter, atomic output), then read back from disk."""
    import caffeport.exporters.onnx  # registers -f onnx (until caffeport/exporters/__init__.py lists it)

    model_path, proto = _files(name)
    caffeport.convert(model_path, proto, out, format="onnx")
    return caffeport.read(model_path, proto), onnx.load(str(out))


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_model_matches_the_reference_tensor_by_tensor(name: str, tmp_path: Path) -> None:
    net, model = _convert(name, tmp_path / "m.onnx")
    assert model.opset_import[0].version == 17 and model.opset_import[0].domain == ""
    assert [i.name for i in model.graph.input] == list(net.inputs)
    check_against_reference(net, model, _inputs(net))


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_caffe_reference_model_matches_caffe_itself(name: str, tmp_path: Path) -> None:
    """Caffe's own per-layer outputs (e_recurrent: LSTM with cont restarting stream 1 at t=3, lowered exactly)."""
    net, model = _convert(name, tmp_path / "m.onnx")
    inputs = reference_inputs(name)
    check_against_reference(net, model, inputs)
    got = ort_all(model, inputs)
    pairs = tensor_map(model)
    caffe = reference_outputs(name)
    fed = {layer.name for layer in net.layers if layer.type == "Input"}
    ours = {layer.name for layer in net.layers}
    caffe = {k: v for k, v in caffe.items() if k.partition("__")[0] in ours}  # not Caffe's automatic Split copies
    compared = 0
    for key, want in caffe.items():
        layer, _, top = key.partition("__")
        if layer in fed:
            continue
        assert_close(key, got[pairs[f"{layer}/{top}"]], want)
        compared += 1
    assert compared == len(caffe) - len(fed) > 0


def test_in_place_chain_names_last_writer_after_the_top(tmp_path: Path) -> None:
    """resnet50-head: conv1 -> bn_conv1 -> scale_conv1 -> conv1_relu all write 'conv1'."""
    net, model = _convert("resnet50-head-bn", tmp_path / "m.onnx")
    pairs = tensor_map(model)
    writers = [layer.name for layer in net.layers if "conv1" in layer.tops]
    assert len(writers) == 4
    assert [pairs[f"{w}/conv1"] for w in writers] == [f"{w}/conv1" for w in writers[:-1]] + ["conv1"]
    names = {out for node in model.graph.node for out in node.output}
    assert {pairs[f"{w}/conv1"] for w in writers} <= names
    infos = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    assert infos["bn_conv1/conv1"] == [1, 64, 112, 112]


@pytest.mark.parametrize("name", ["mtcnn-det1", "b_resnet_block", "ultraface", "mtcnn-det4", "hyperlpr-segfree"])
def test_dynamic_batch_runs_at_other_batch_sizes(name: str) -> None:
    model_path, proto = _files(name)
    net = caffeport.read(model_path, proto)
    model = to_onnx(net, dynamic_batch=True)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N" and not dim.HasField("dim_value")
    for batch in (1, 3):
        resized = dict(net.inputs)
        rng = np.random.default_rng(batch)
        inputs = {k: rng.uniform(-1, 1, size=(batch, *s[1:])).astype(np.float32) for k, s in resized.items()}
        check_against_reference(net, model, inputs)


def test_dynamic_batch_refuses_the_unrolled_lstm() -> None:
    net = caffeport.read(*_files("e_recurrent"))
    with pytest.raises(UnsupportedModelError, match=r"'lstm' \(LSTM\): unrolled over the prototxt's T steps"):
        to_onnx(net, dynamic_batch=True)


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_other_opsets(opset: int) -> None:
    net = caffeport.read(*_files("mtcnn-det4"))  # Slice -> Split, whose sizes moved to an input at 13
    model = to_onnx(net, opset=opset)
    assert model.opset_import[0].version == opset
    check_against_reference(net, model, _inputs(net))


@pytest.mark.parametrize("opset", [12, 99])
def test_unsupported_opset_is_a_clear_error(opset: int) -> None:
    net = caffeport.read(*_files("mtcnn-det1"))
    with pytest.raises(CaffeportError, match=f"opset {opset} is not supported: choose 13 to"):
        to_onnx(net, opset=opset)


def test_missing_onnx_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import caffeport.exporters.onnx  # registers -f onnx (until caffeport/exporters/__init__.py lists it)

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes "import onnx" fail
    with pytest.raises(CaffeportError, match=r"pip install 'caffeport\[onnx\]'"):
        caffeport.convert(*_files("mtcnn-det1"), tmp_path / "m.onnx", format="onnx")
    assert not list(tmp_path.iterdir())


def test_a_backend_that_rewrites_the_blobs_is_refused(tmp_path: Path) -> None:
    import caffeport.exporters.onnx  # registers -f onnx (until caffeport/exporters/__init__.py lists it)

    with pytest.raises(CaffeportError, match="format onnx does not write the tensorflow backend's layout"):
        caffeport.convert(*_files("mtcnn-det1"), tmp_path / "m.onnx", format="onnx", backend="tensorflow")
    assert not list(tmp_path.iterdir())


def test_importing_caffeport_and_the_exporters_does_not_import_onnx() -> None:
    code = ("import sys, caffeport, caffeport.cli, caffeport.onnx; from caffeport.exporters import load_exporters; "
            "import caffeport.exporters.onnx; load_exporters(); "
            "print([m for m in ('onnx', 'onnxruntime') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"


def test_opset_and_dynamic_batch_from_the_command_line(tmp_path: Path) -> None:
    """The convert flags reach the writer: the model says the opset asked for and has a symbolic batch axis."""
    import subprocess
    import sys

    import onnx

    out = tmp_path / "m.onnx"
    model, proto = _files("mtcnn-det1")
    result = subprocess.run([sys.executable, "-m", "caffeport", "convert", str(model), "-p", str(proto), "-f", "onnx",
                             "--opset", "18", "--dynamic-batch", "-o", str(out)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    loaded = onnx.load(str(out))
    assert [o.version for o in loaded.opset_import if o.domain in ("", "ai.onnx")] == [18]
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    refused = subprocess.run([sys.executable, "-m", "caffeport", "convert", str(model), "-p", str(proto), "-f", "npz",
                              "--opset", "18", "-o", str(tmp_path / "w.npz")], capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode == 1 and "--opset 18 is for -f onnx, not -f npz" in refused.stderr
