"""``--matlab``: MTCNN (trained with MATLAB Caffe) rewritten for row-major images.

The oracle is the original net run by `caffeport.run` on the *transposed*
image (what MATLAB handed Caffe): the rewritten net on the row-major image
must give the same outputs, spatial ones transposed back, and so must an
independent PyTorch port of MTCNN (written here, as facenet-pytorch's is)
loaded from the converted safetensors, and the generated ``-f torch-code``
model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.cli import main
from caffeport.forward import net_outputs
from caffeport.ir import Net
from caffeport.readers.preprocess import load_image, resize_bilinear
from caffeport.transforms import Options, transform
from caffeport.transforms.matlab import MatlabLayoutError
from tests.codegen.codegen_helpers import run_generated
from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT.parent / "shared" / "images" / "astronaut.png"
#: det1 runs at any size: a non-square input, so that swapping H and W is visible in every shape
SIZES = {"det1": (30, 44), "det2": (24, 24), "det3": (48, 48)}


def _paths(name: str) -> tuple[Path, Path]:
    folder = ROOT / "examples" / "mtcnn" if name == "det1" else models_dir() / "mtcnn"
    return folder / f"{name}.caffemodel", folder / f"{name}.prototxt"


def _read(name: str) -> Net:
    return caffeport.read(*_paths(name))


def _face(height: int, width: int) -> np.ndarray:
    """The astronaut's face, row-major (1, 3, H, W), RGB scaled as MTCNN's code does: (x - 127.5) / 128."""
    if not IMAGE.is_file():
        pytest.fail(f"the shared test image is missing: {IMAGE}")
    crop = load_image(IMAGE)[20:230, 140:330]
    rgb = resize_bilinear(crop, height, width)
    return np.ascontiguousarray(((rgb - 127.5) * 0.0078125).transpose(2, 0, 1)[None], dtype=np.float32)


def _transposed(value: np.ndarray) -> np.ndarray:
    return value.swapaxes(2, 3) if value.ndim == 4 else value


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def _reference(name: str, x: np.ndarray, *, all_layers: bool = False) -> dict[str, np.ndarray]:
    """The original net on the transposed image, its spatial outputs transposed back to row-major."""
    out = caffeport.run(_read(name), {"data": x.swapaxes(2, 3)}, all_layers=all_layers)
    return {key: _transposed(value) for key, value in out.items()}


@pytest.mark.parametrize("name", ["det1", "det2", "det3"])
def test_row_major_net_equals_the_reference_on_the_transposed_image(name: str) -> None:
    net = _read(name)
    row_major = transform(net, "caffe", Options(matlab=True))
    h, w = net.inputs["data"][2:]
    assert row_major.inputs["data"] == (1, 3, w, h) and row_major.conversion.matlab is True
    x = _face(*SIZES[name])
    got = caffeport.run(row_major, {"data": x}, all_layers=True)
    want = _reference(name, x, all_layers=True)
    outputs = net_outputs(net)
    assert outputs and set(outputs) <= set(got) and len(want) > len(outputs)
    for key, value in want.items():  # every output and every layer's top (det2's conv4, det3's conv5 read 3x3 blobs)
        assert got[key].shape == value.shape, key
        assert _rel(got[key], value) < 1e-5, (key, _rel(got[key], value))
    if name != "det1":  # the kernels are not symmetric: the unconverted net on the row-major image is another function
        plain = caffeport.run(net, {"data": x})
        assert max(_rel(plain[key], want[key]) for key in outputs) > 1e-2


def test_without_the_column_reorder_det2_is_wrong() -> None:
    """Negative control: kernels swapped but RNet's first fully connected layer (conv4) left as stored."""
    net = _read("det2")
    row_major = transform(net, "caffe", Options(matlab=True))
    assert not np.array_equal(np.asarray(row_major.layer("conv4").blobs[0]), np.asarray(net.layer("conv4").blobs[0]))
    row_major.layer("conv4").blobs[0] = net.layer("conv4").blobs[0]
    x = _face(24, 24)
    got, want = caffeport.run(row_major, {"data": x}), _reference("det2", x)
    assert max(_rel(got[key], want[key]) for key in want) > 1e-2


def test_the_keras_backend_composes_both_reorders() -> None:
    """keras-h5's backend: the --matlab reorder, then the channels-last one; a Keras Flatten of the NHWC row-major
    blob times that Dense kernel is RNet's conv4 of the reference (numpy standing in for Keras' Dense)."""
    net = _read("det2")
    keras = transform(net, "tensorflow", Options(matlab=True))
    x = _face(24, 24)
    want = _reference("det2", x, all_layers=True)
    before = want["prelu3/conv3"]  # row-major (1, 64, 3, 3), as the converted model computes it
    kernel, bias = (np.asarray(b) for b in keras.layer("conv4").blobs)
    got = before.transpose(0, 2, 3, 1).reshape(1, -1) @ kernel + bias
    assert _rel(got, want["conv4/conv4"]) < 1e-5


def test_the_column_reorder_is_the_index_rule() -> None:
    """W_g[o, (c*W + w)*H + h] = W_f[o, (c*H + h)*W + w] for det3's conv5 (input 128 x 3 x 3), index by index."""
    net = _read("det3")
    row_major = transform(net, "caffe", Options(matlab=True))
    wf, wg = np.asarray(net.layer("conv5").blobs[0]), np.asarray(row_major.layer("conv5").blobs[0])
    c_, h_, w_ = 128, 3, 3
    for o, c, h, w in [(0, 0, 0, 1), (5, 17, 2, 0), (255, 127, 1, 2), (100, 64, 0, 2)]:
        assert wg[o, (c * w_ + w) * h_ + h] == wf[o, (c * h_ + h) * w_ + w]
    assert c_ * h_ * w_ == wf.shape[1]


def _ported_mtcnn(name: str) -> Any:
    """PNet, RNet or ONet written by hand in PyTorch, as the independent ports of MTCNN are (facenet-pytorch).

    They take row-major NCHW images and flatten in PyTorch's (C, H, W) order: only weights converted with
    ``--matlab`` fit them.
    """
    import torch
    from torch import nn

    def conv(cin: int, cout: int, k: int) -> nn.Module:
        return nn.Conv2d(cin, cout, k)

    def pool(k: int) -> nn.Module:
        return nn.MaxPool2d(k, 2, ceil_mode=True)

    if name == "det1":
        trunk = [("conv1", conv(3, 10, 3)), ("PReLU1", nn.PReLU(10)), ("pool1", pool(2)),  # det1's names are upper
                 ("conv2", conv(10, 16, 3)), ("PReLU2", nn.PReLU(16)),
                 ("conv3", conv(16, 32, 3)), ("PReLU3", nn.PReLU(32))]
        heads = {"prob1": ("conv4-1", conv(32, 2, 1)), "conv4-2": ("conv4-2", conv(32, 4, 1))}
    elif name == "det2":
        trunk = [("conv1", conv(3, 28, 3)), ("prelu1", nn.PReLU(28)), ("pool1", pool(3)),
                 ("conv2", conv(28, 48, 3)), ("prelu2", nn.PReLU(48)), ("pool2", pool(3)),
                 ("conv3", conv(48, 64, 2)), ("prelu3", nn.PReLU(64)), ("flatten", nn.Flatten()),
                 ("conv4", nn.Linear(576, 128)), ("prelu4", nn.PReLU(128))]
        heads = {"prob1": ("conv5-1", nn.Linear(128, 2)), "conv5-2": ("conv5-2", nn.Linear(128, 4))}
    else:
        trunk = [("conv1", conv(3, 32, 3)), ("prelu1", nn.PReLU(32)), ("pool1", pool(3)),
                 ("conv2", conv(32, 64, 3)), ("prelu2", nn.PReLU(64)), ("pool2", pool(3)),
                 ("conv3", conv(64, 64, 3)), ("prelu3", nn.PReLU(64)), ("pool3", pool(2)),
                 ("conv4", conv(64, 128, 2)), ("prelu4", nn.PReLU(128)), ("flatten", nn.Flatten()),
                 ("conv5", nn.Linear(1152, 256)), ("prelu5", nn.PReLU(256))]
        heads = {"prob1": ("conv6-1", nn.Linear(256, 2)), "conv6-2": ("conv6-2", nn.Linear(256, 4)),
                 "conv6-3": ("conv6-3", nn.Linear(256, 10))}

    class Port(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.ModuleDict(trunk)
            self.heads = nn.ModuleDict({caffe: module for caffe, module in heads.values()})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            for module in self.trunk.values():
                x = module(x)
            out = {top: self.heads[caffe](x) for top, (caffe, _) in heads.items()}
            out["prob1"] = torch.softmax(out["prob1"], dim=1)
            return out

    return Port()


def test_an_independent_pytorch_port_loads_the_matlab_safetensors(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    for name in ("det1", "det2", "det3"):
        out = tmp_path / f"{name}.safetensors"
        caffeport.convert(*_paths(name), out, format="safetensors", backend="torch", matlab=True)
        with safe_open(str(out), "np") as handle:
            assert handle.metadata()["matlab"] == "true"
        weights = load_file(str(out))
        port = _ported_mtcnn(name)
        state = {}
        for key in port.state_dict():
            _, caffe_name, field = key.split(".")  # trunk.conv1.weight -> the file's conv1.weight
            state[key] = weights[f"{caffe_name}.{field}"]
        port.load_state_dict(state)
        x = _face(*SIZES[name])
        with torch.no_grad():
            got = {k: v.numpy() for k, v in port(torch.from_numpy(x)).items()}
        want = _reference(name, x)
        assert set(got) == set(want), name
        for key in want:
            assert _rel(got[key], want[key]) < 1e-5, (name, key, _rel(got[key], want[key]))


@pytest.mark.parametrize("name", ["det1", "det3"])
def test_generated_torch_code_takes_row_major_images(name: str, tmp_path: Path) -> None:
    folder = tmp_path / name
    caffeport.convert(*_paths(name), folder, format="torch-code", matlab=True)
    x = _face(*SIZES[name])
    got, outputs = run_generated(folder, {"data": x}, ["data"])
    want = _reference(name, x, all_layers=True)
    assert outputs and set(outputs) <= set(want)
    for key in outputs:
        assert _rel(got[key], want[key]) < 1e-5, (key, _rel(got[key], want[key]))


def test_keras_h5_holds_the_swapped_kernels_and_records_matlab(tmp_path: Path) -> None:
    """The default format too: conv kernels (kh, kw, in, out) are the plain conversion's with kh and kw swapped."""
    import json

    import h5py

    model, prototxt = _paths("det2")
    caffeport.convert(model, prototxt, tmp_path / "m.h5", matlab=True)
    caffeport.convert(model, prototxt, tmp_path / "p.h5")
    with h5py.File(tmp_path / "m.h5", "r") as m, h5py.File(tmp_path / "p.h5", "r") as p:
        assert json.loads(m.attrs["caffeport"])["matlab"] is True and "matlab" not in json.loads(p.attrs["caffeport"])
        for conv in ("conv1", "conv2", "conv3"):
            swapped, plain = m[f"{conv}/{conv}/kernel:0"][()], p[f"{conv}/{conv}/kernel:0"][()]
            assert not np.array_equal(swapped, plain)
            np.testing.assert_array_equal(swapped, plain.swapaxes(0, 1))


def test_the_onnx_export_takes_row_major_images(tmp_path: Path) -> None:
    """-f onnx --matlab (a whole graph, not only weights) in onnxruntime: ONet on the row-major face."""
    import onnxruntime

    out = tmp_path / "det3.onnx"
    caffeport.convert(*_paths("det3"), out, format="onnx", matlab=True)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _face(48, 48)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))
    want = _reference("det3", x)
    assert set(want) <= set(got)
    for key in want:
        assert _rel(got[key], want[key]) < 1e-5, (key, _rel(got[key], want[key]))


def test_run_matlab_on_the_command_line_writes_the_row_major_outputs(tmp_path: Path) -> None:
    model, prototxt = _paths("det1")
    x = _face(*SIZES["det1"])
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(model), "-p", str(prototxt), "--matlab", "--input", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "out.npz"), "-q"]) == 0
    want = _reference("det1", x)
    with np.load(tmp_path / "out.npz") as z:
        assert set(z.files) == set(want)
        for key in want:
            assert _rel(z[key], want[key]) < 1e-5


_ASYMMETRIC = """
name: "asym"
input: "data"
input_shape { dim: 2 dim: 3 dim: 13 dim: 19 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_h: 3 kernel_w: 5 stride_h: 1 stride_w: 2 pad_w: 2 dilation: 1 dilation: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_w: 1 } }
layer { name: "deconv" type: "Deconvolution" bottom: "pool" top: "deconv"
  convolution_param { num_output: 4 kernel_size: 2 kernel_size: 3 stride: 1 stride: 2 group: 2 } }
layer { name: "crop" type: "Crop" bottom: "deconv" bottom: "pool" top: "crop" crop_param { offset: 1 offset: 3 } }
layer { name: "interp" type: "Interp" bottom: "crop" top: "interp" interp_param { height: 9 width: 5 } }
layer { name: "cat" type: "Concat" bottom: "interp" bottom: "interp" top: "cat" concat_param { axis: 3 } }
layer { name: "sm" type: "Softmax" bottom: "cat" top: "sm" softmax_param { axis: 2 } }
layer { name: "flat" type: "Flatten" bottom: "sm" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "fc2" type: "InnerProduct" bottom: "pool" top: "fc2"
  inner_product_param { num_output: 5 axis: 2 transpose: true } }
"""


def _asymmetric(tmp_path: Path, text: str = _ASYMMETRIC) -> Net:
    """A net with every H/W-asymmetric parameter the pass swaps, random weights (MTCNN's are all square)."""
    path = tmp_path / "asym.prototxt"
    path.write_text(text)
    net = caffeport.read(None, path)
    rng = np.random.default_rng(7)
    # (kernel, bias) shapes; fc2 (transpose: true) holds (K, N): its input is pool's (2, 4, 6, 8) from axis 2
    shapes = {"conv": ((4, 3, 3, 5), 4), "deconv": ((4, 2, 2, 3), 4), "fc": ((7, 360), 7), "fc2": ((48, 5), 5)}
    for name, (kernel, bias) in shapes.items():
        net.layer(name).blobs = [rng.standard_normal(kernel).astype(np.float32),
                                 rng.standard_normal(bias).astype(np.float32)]
    return net


def test_asymmetric_windows_axes_crops_and_resizes_are_swapped(tmp_path: Path) -> None:
    net = _asymmetric(tmp_path)
    row_major = transform(net, "caffe", Options(matlab=True))
    conv = row_major.layer("conv").params["convolution_param"]
    assert (conv["kernel_h"], conv["kernel_w"], conv["stride_h"], conv["stride_w"], conv["pad_h"]) == (5, 3, 2, 1, 2)
    assert "pad_w" not in conv and conv["dilation"] == [2, 1]
    x = np.random.default_rng(3).standard_normal((2, 3, 19, 13)).astype(np.float32)
    got = caffeport.run(row_major, {"data": x}, all_layers=True)
    want = {k: _transposed(v) for k, v in caffeport.run(net, {"data": x.swapaxes(2, 3)}, all_layers=True).items()}
    for key, value in want.items():
        if key == "flat/flat":  # a flattened spatial blob: its values come in W, H order (the fc after it fixes that)
            assert got[key].shape == value.shape and _rel(got[key], value) > 1e-2
            continue
        assert got[key].shape == value.shape, key
        assert _rel(got[key], value) < 1e-5, (key, _rel(got[key], value))


@pytest.mark.parametrize(("layer", "expected"), [
    ('layer { name: "perm" type: "Permute" bottom: "data" top: "perm" permute_param { order: 0 order: 2 order: 3 '
     'order: 1 } }', "layer 'perm': --matlab: Permute reads a spatial blob"),
    ('layer { name: "crop" type: "Crop" bottom: "data" bottom: "data" top: "crop" crop_param { axis: 3 } }',
     "layer 'crop': --matlab: Crop at axis 3 crops W alone"),
    ('layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }', "net output 'flat' is a flattened"),
    ('layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 0 dim: 0 dim: 19 '
     'dim: 13 } } }', "layer 'r': --matlab: Reshape from [1, 3, 13, 19] to [1, 3, 19, 13]"),
])
def test_layers_without_a_row_major_rule_are_refused(tmp_path: Path, layer: str, expected: str) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text('input: "data" input_shape { dim: 1 dim: 3 dim: 13 dim: 19 }\n' + layer)
    with pytest.raises(MatlabLayoutError) as info:
        transform(caffeport.read(None, path), "caffe", Options(matlab=True))
    assert expected in str(info.value) and "net.prototxt" in str(info.value)


def test_a_caffemodel_without_its_prototxt_is_refused_on_the_command_line(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    model, _ = _paths("det2")
    out = tmp_path / "w.safetensors"
    assert main(["convert", str(model), "-f", "safetensors", "--matlab", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--matlab needs every blob's shape" in err[0] and "deploy prototxt" in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())
