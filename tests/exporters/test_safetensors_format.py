"""The safetensors format (caffeport/exporters/safetensors.py), checked with safetensors and PyTorch.

``load_state_dict(safetensors.torch.load_file(...), strict=True)`` succeeds on PyTorch mirrors of the
caffe-reference nets (tests/proof/test_torch_reference.py, plus an ``nn.LSTM`` mirror of e_recurrent), which
then reproduce Caffe's per-layer outputs; the header follows the format's specification byte for byte.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch
from torch import nn

import caffeport
from caffeport.errors import ModelStructureError
from caffeport.exporters import safetensors as safetensors_format
from caffeport.ir import Layer, Net
from tests.conftest import models_dir
from tests.exporters.format_helpers import (
    ODD_CHUNK_BYTES,
    REFERENCE,
    as_written,
    assert_widened_to_float32,
    caffe_inputs,
    caffe_outputs,
    convert_reference,
    duplicate_names_net,
    little_endian,
    odd_net,
    reference_files,
    same_bits,
    segfree_fp16,
    use_chunk_bytes,
    write_with,
)
from tests.proof.reference_nets import B_RESNET_EPS, add_split_copies, assert_all_close, assert_close
from tests.proof.test_torch_reference import ALenet, BiasedEmbedding, BResnetBlock, CaffeNet, CDeconvPrelu, DGrouped
from tests.proof.test_torch_reference import run as run_torch


class ERecurrentLSTM(CaffeNet):
    """e_recurrent with ``nn.LSTM`` (state_dict keys ``weight_ih_l0``...), stepped so ``cont`` can reset it."""

    def __init__(self) -> None:
        super().__init__({"embed": BiasedEmbedding(20, 8), "lstm": nn.LSTM(8, 16), "ip": nn.Linear(16, 5)})

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        data, cont = inputs["data"], inputs["cont"]  # (T, N), time-major like Caffe
        out = {"data__data": data, "cont__cont": cont}
        x = out["embed__embed"] = self["embed"](data.long())
        lstm = self["lstm"]
        steps, streams = data.shape
        h = torch.zeros(1, streams, 16)
        c = torch.zeros(1, streams, 16)
        hs = []
        for t in range(steps):
            keep = cont[t].view(1, streams, 1)  # cont == 0 starts the stream afresh
            y, (h, c) = lstm(x[t : t + 1], (h * keep, c * keep))
            hs.append(y[0])
        x = out["lstm__lstm"] = torch.stack(hs)
        out["ip__ip"] = self["ip"](x)
        return out


TORCH_MIRRORS: dict[str, Callable[[], CaffeNet]] = {
    "a_lenet": ALenet,
    "a_lenet_v1": ALenet,
    "b_resnet_block": lambda: BResnetBlock(B_RESNET_EPS),
    "c_deconv_prelu": CDeconvPrelu,
    "d_grouped": DGrouped,
    "e_recurrent": ERecurrentLSTM,
}


@pytest.mark.parametrize("name", REFERENCE)
def test_safetensors_loads_strictly_into_a_torch_mirror_that_reproduces_caffe(name: str, tmp_path: Path) -> None:
    out, result = convert_reference(name, tmp_path, "safetensors")
    assert result.backend == "torch"
    mirror = TORCH_MIRRORS[name]()
    state = safetensors.torch.load_file(out)
    mirror.caffe.load_state_dict(state, strict=True)  # keys <layer>.<tensor>: the mirror's submodules by layer name
    expected = caffe_outputs(name)
    got = run_torch(mirror, caffe_inputs(name))
    add_split_copies(got, expected)
    assert_all_close(got, expected)


@pytest.mark.parametrize("name", REFERENCE)
def test_safetensors_values_and_header_follow_the_format(name: str, tmp_path: Path) -> None:
    out, result = convert_reference(name, tmp_path, "safetensors")
    tensors = safetensors.numpy.load_file(out)
    torch_names = result.net.conversion.weight_names == "torch"
    expected = {n: as_written(la, b) for la in result.net
                for n, b in safetensors_format.layer_tensors(la, torch_names)}
    assert set(tensors) == set(expected)
    for key, blob in expected.items():
        same_bits(tensors[key], blob, key)
    raw = out.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    assert (8 + size) % 8 == 0 and raw[8:9] == b"{"
    header = json.loads(raw[8 : 8 + size])
    entries = sorted((v["data_offsets"], k, v) for k, v in header.items() if k != "__metadata__")
    position = 0
    for (begin, end), key, entry in entries:
        assert begin == position, f"{key}: a gap or overlap before it"
        width = np.dtype(tensors[key].dtype).itemsize
        assert begin % width == 0, f"{key}: not aligned to its element size"
        assert end - begin == math.prod(entry["shape"]) * width
        position = end
    assert 8 + size + position == len(raw)


def test_safetensors_metadata_and_torch_names(tmp_path: Path) -> None:
    out, _ = convert_reference("b_resnet_block", tmp_path, "safetensors")
    with safetensors.safe_open(out, "np") as f:
        metadata = f.metadata()
        keys = set(f.keys())
    assert metadata["format"] == "pt" and metadata["backend"] == "torch"
    assert json.loads(metadata["batchnorm_eps"]) == B_RESNET_EPS
    assert json.loads(metadata["name_map"]) == {}
    assert json.loads(metadata["source"])["caffemodel"] == str(reference_files("b_resnet_block")[0])
    assert json.loads(metadata["fused"])["scale_conv0"] == "bn_conv0"
    bn = {"bn_conv0.weight", "bn_conv0.bias", "bn_conv0.running_mean", "bn_conv0.running_var",
          "bn_conv0.num_batches_tracked"}
    assert bn <= keys and "conv0.weight" in keys and "conv0.bias" not in keys
    counter = safetensors.torch.load_file(out)["bn_conv0.num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.shape == () and int(counter) == 0


def test_safetensors_names_with_other_backends(tmp_path: Path) -> None:
    out, result = convert_reference("d_grouped", tmp_path, "safetensors", "caffe")
    assert set(safetensors.numpy.load_file(out)) == {f"{la.name}.{i}" for la in result.net
                                                     for i in range(len(la.blobs))}
    with safetensors.safe_open(out, "np") as f:
        assert "format" not in f.metadata() and f.metadata()["backend"] == "caffe"
    keras = tmp_path / "keras.safetensors"
    caffeport.convert(*reference_files("d_grouped"), keras, format="safetensors", backend="tensorflow")
    names = set(safetensors.numpy.load_file(keras))
    assert {"conv_dw.depthwise_kernel", "conv_g2.kernel", "scale_b.scale", "scale_b.bias"} <= names


def test_safetensors_keeps_fp16_with_backend_caffe(tmp_path: Path) -> None:
    model = models_dir() / "hyperlpr-finemapping" / "fp16" / "HorizonalFinemapping.caffemodel"
    out = tmp_path / "fp16.safetensors"
    caffeport.convert(model, None, out, format="safetensors", backend="caffe")
    tensors = safetensors.numpy.load_file(out)
    for layer in caffeport.read(model):
        for i, blob in enumerate(layer.blobs):
            same_bits(tensors[f"{layer.name}.{i}"], blob, f"{layer.name}.{i}")
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}


@pytest.mark.parametrize("backend", ["torch", "tensorflow"])
def test_safetensors_fp16_weights_are_widened_once_a_backend_converts_them(backend: str, tmp_path: Path) -> None:
    """Transforms hand over fp16 views; frameworks get float32 throughout, widened exactly."""
    model = segfree_fp16()
    out = tmp_path / "segfree.safetensors"
    result = caffeport.convert(model, model.with_suffix(".prototxt"), out, format="safetensors", backend=backend)
    assert_widened_to_float32(result, safetensors.numpy.load_file(out))


def _bn_alone_net() -> Net:
    """Convolution then a BatchNorm with no Scale (Caffe stores mean*s, var*s, s)."""
    rng = np.random.default_rng(7)
    mean, var, s = rng.normal(size=3).astype(np.float32), rng.uniform(0.5, 2, 3).astype(np.float32), 4.0
    return Net(name="bn_alone", inputs={"data": (2, 3, 4, 4)}, layers=[
        Layer("conv", "Convolution", ["data"], ["conv"], {"convolution_param": {"num_output": 3, "kernel_size": [1],
                                                                                "bias_term": False}},
              blobs=[rng.normal(size=(3, 3, 1, 1)).astype(np.float32)]),
        Layer("bn", "BatchNorm", ["conv"], ["conv"], {"batch_norm_param": {"eps": 1e-3}},
              blobs=[mean * s, var * s, np.array([s], dtype=np.float32)]),
    ])
def test_safetensors_batchnorm_without_scale_loads_into_non_affine_batchnorm(tmp_path: Path) -> None:
    net = _bn_alone_net()
    out = write_with(caffeport.transform(net, "torch"), tmp_path / "bn.safetensors", "safetensors")
    mirror = nn.ModuleDict({"conv": nn.Conv2d(3, 3, 1, bias=False), "bn": nn.BatchNorm2d(3, eps=1e-3, affine=False)})
    state = safetensors.torch.load_file(out)
    assert set(state) == {"conv.weight", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    mirror.load_state_dict(state, strict=True)
    x = np.random.default_rng(8).normal(size=(2, 3, 4, 4)).astype(np.float32)
    conv = np.einsum("oi,nihw->nohw", net.layers[0].blobs[0][:, :, 0, 0], x)
    mean, var, s = (b.astype(np.float64) for b in net.layers[1].blobs)
    want = (conv - (mean / s)[None, :, None, None]) / np.sqrt((var / s)[None, :, None, None] + 1e-3)
    mirror.eval()
    with torch.no_grad():
        got = mirror["bn"](mirror["conv"](torch.from_numpy(x))).numpy()
    assert_close("bn", got, want)


def test_safetensors_rnn_is_nn_rnn_plus_its_output_linear(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    steps, streams, inputs, hidden = 5, 2, 3, 4
    w_xh, b_h, w_hh, w_ho, b_o = (rng.normal(scale=0.5, size=s).astype(np.float32)
                                  for s in ((hidden, inputs), (hidden,), (hidden, hidden), (hidden, hidden), (hidden,)))
    net = Net(name="rnn", layers=[Layer("rnn", "RNN", ["x", "cont"], ["rnn"],
                                        {"recurrent_param": {"num_output": hidden}},
                                        blobs=[w_xh, b_h, w_hh, w_ho, b_o])])
    out = write_with(caffeport.transform(net, "torch"), tmp_path / "rnn.safetensors", "safetensors")
    mirror = nn.ModuleDict({"rnn": nn.RNN(inputs, hidden), "rnn_output": nn.Linear(hidden, hidden)})
    state = safetensors.torch.load_file(out)
    assert set(state) == {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                          "rnn_output.weight", "rnn_output.bias"}
    mirror.load_state_dict(state, strict=True)
    x = rng.normal(size=(steps, streams, inputs)).astype(np.float32)
    h = np.zeros((streams, hidden))
    want = []
    for t in range(steps):  # Caffe's RNN: h_t = tanh(W_hh h + W_xh x + b_h), o_t = tanh(W_ho h_t + b_o)
        h = np.tanh(h @ w_hh.T + x[t] @ w_xh.T + b_h)
        want.append(np.tanh(h @ w_ho.T + b_o))
    with torch.no_grad():
        hs, _ = mirror["rnn"](torch.from_numpy(x))
        got = torch.tanh(mirror["rnn_output"](hs)).numpy()
    assert_close("rnn", got, np.stack(want))


@pytest.mark.parametrize("chunk_bytes", ODD_CHUNK_BYTES)
def test_safetensors_odd_blobs_round_trip(chunk_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chunk_bytes(monkeypatch, chunk_bytes)
    net = odd_net()
    tensors = safetensors.numpy.load_file(write_with(net, tmp_path / "odd.safetensors", "safetensors"))
    for i, blob in enumerate(net.layers[0].blobs):
        same_bits(tensors[f"odd.{i}"], little_endian(blob), f"safetensors {i}")


def test_safetensors_refuses_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(ModelStructureError, match="'a'"):
        write_with(duplicate_names_net(), tmp_path / "dup.safetensors", "safetensors")


def test_pytorch_conventions_follow_the_layout_pass_not_the_backend_name(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend of the user's own built on torch_layout gets nn.LSTM's ``_l0`` keys, BatchNorm's counter and the
    ``pt`` format tag (the typed fact `Conversion.weight_names`); backend caffe gets none of them."""
    from caffeport.transforms import BACKENDS, register_backend

    monkeypatch.setitem(BACKENDS, "mine", [])  # removed again after the test
    register_backend("mine", BACKENDS["torch"], replace=True)
    model, proto = reference_files("e_recurrent")
    for backend, torch_names in (("mine", True), ("caffe", False)):
        out = tmp_path / f"{backend}.safetensors"
        caffeport.convert(model, proto, out, format="safetensors", backend=backend)
        with safetensors.safe_open(str(out), "np") as f:
            keys, metadata = set(f.keys()), f.metadata()
        assert ("lstm.weight_ih_l0" in keys) is torch_names, (backend, sorted(keys))
        assert (metadata.get("format") == "pt") is torch_names, (backend, metadata)
    res, res_proto = reference_files("b_resnet_block")
    caffeport.convert(res, res_proto, tmp_path / "bn.safetensors", format="safetensors", backend="mine")
    with safetensors.safe_open(str(tmp_path / "bn.safetensors"), "np") as f:
        names = list(f.keys())
    assert any(key.endswith(".num_batches_tracked") for key in names)
