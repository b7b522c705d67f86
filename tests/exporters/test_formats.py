"""The npz, safetensors, flax and ir formats, checked with the libraries that read them.

- npz (backend caffe): ``numpy.load`` gives every blob of `caffeport.read`, bit for bit, dtype kept;
- safetensors (backend torch): ``load_state_dict(safetensors.torch.load_file(...), strict=True)`` succeeds on
  PyTorch mirrors of the caffe-reference nets (tests/proof/test_torch_reference.py, plus an ``nn.LSTM`` mirror of
  e_recurrent), which then reproduce Caffe's per-layer outputs;
- flax (backend tensorflow): ``flax.serialization.msgpack_restore`` gives the Keras-layout blobs under Flax's
  names, the bytes are exactly what ``msgpack_serialize`` makes of them, and Flax linen mirrors whose variables
  are the restored ones (same tree as their own ``init``) reproduce Caffe's outputs;
- ir: `load_ir` gives back every caffemodel of the shared models, and converted nets, exactly.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import flax.linen as fnn
import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch
from flax import serialization
from torch import nn

import caffeport
from caffeport.errors import CaffeportError, DecodeError, InputFileError, ModelStructureError
from caffeport.exporters import ExportOptions, load_exporters, msgpack_format, safetensors_format
from caffeport.exporters import npz as npz_format
from caffeport.ir import Layer, MatchReport, Net, ReportEntry
from caffeport.ir_file import IR_KEY, IR_VERSION, load_ir
from tests.conftest import SHARED_MODELS, models_dir
from tests.proof.reference_nets import (
    B_RESNET_EPS,
    RTOL,
    add_split_copies,
    assert_all_close,
    assert_close,
    reference_inputs,
    to_nchw,
    to_nhwc,
)
from tests.proof.test_torch_reference import ALenet, BiasedEmbedding, BResnetBlock, CaffeNet, CDeconvPrelu, DGrouped
from tests.proof.test_torch_reference import run as run_torch

#: the caffe-reference models with Caffe's outputs; a_lenet_v1 holds a_lenet's weights in V1 and gives its outputs
REFERENCE = ["a_lenet", "a_lenet_v1", "b_resnet_block", "c_deconv_prelu", "d_grouped", "e_recurrent"]
_OUTPUTS_OF = {"a_lenet_v1": "a_lenet"}


def _reference_dir() -> Path:
    return models_dir() / "caffe-reference"


def test_every_caffe_reference_model_is_covered() -> None:
    found = sorted(p.name for p in _reference_dir().iterdir() if p.is_dir())
    assert found == sorted(REFERENCE), f"caffe-reference holds {found}; update REFERENCE in this test"


def _files(name: str) -> tuple[Path, Path]:
    """(caffemodel, deploy prototxt) of a caffe-reference model; fails (never skips) when they are missing."""
    folder = _reference_dir() / name
    models = sorted(folder.glob("*.caffemodel"))
    prototxts = sorted(folder.glob("deploy*.prototxt"))
    assert len(models) == 1 and len(prototxts) == 1, f"{folder}: expected one caffemodel and one deploy prototxt"
    return models[0], prototxts[0]


def _expected_outputs(name: str) -> dict[str, np.ndarray]:
    with np.load(_reference_dir() / _OUTPUTS_OF.get(name, name) / "outputs_per_layer.npz") as z:
        return {key: z[key] for key in z.files}


def _inputs(name: str) -> dict[str, np.ndarray]:
    return reference_inputs(_OUTPUTS_OF.get(name, name))


def _convert(name: str, tmp_path: Path, fmt: str, backend: str | None = None) -> tuple[Path, caffeport.ConvertResult]:
    caffemodel, prototxt = _files(name)
    out = tmp_path / f"{name}.{fmt}"
    return out, caffeport.convert(caffemodel, prototxt, out, format=fmt, backend=backend)


def _write(net: Net, path: Path, fmt: str) -> Path:
    load_exporters()[fmt].write(net, path, ExportOptions())
    return path


def _as_written(layer: Layer, blob: Any) -> np.ndarray:
    """What the writers store for a transformed blob: floats at least float32 once a backend converted the layer."""
    array = np.asarray(blob)
    if layer.target and array.dtype.kind == "f":
        return array.astype(np.promote_types(array.dtype, np.float32))
    return array


def _same_bits(got: np.ndarray, want: Any, what: str) -> None:
    want = np.asarray(want)  # a lazy blob (caffeport.blocks.Reshaped) too
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.tobytes() == want.tobytes(), f"{what}: values differ"


# ---------------------------------------------------------------- npz


@pytest.mark.parametrize("name", REFERENCE)
def test_npz_holds_every_caffe_blob_bit_for_bit(name: str, tmp_path: Path) -> None:
    out, result = _convert(name, tmp_path, "npz")
    assert result.backend == "caffe"
    original = caffeport.read(*_files(name))
    expected = {f"{layer.name}/{i}": blob for layer in original for i, blob in enumerate(layer.blobs)}
    with np.load(out) as z:
        assert sorted(z.files) == sorted([*expected, "__caffeport__"])
        for key, blob in expected.items():
            _same_bits(z[key], blob, key)
        metadata = json.loads(str(z["__caffeport__"][()]))
        assert z["__caffeport__"].shape == () and z["__caffeport__"].dtype.kind == "U"
    assert metadata["backend"] == "caffe"
    assert metadata["source"]["caffemodel"] == str(_files(name)[0])


def test_npz_keeps_fp16_and_mixed_precision(tmp_path: Path) -> None:
    model = models_dir() / "hyperlpr-segfree-fp16" / "SegmenationFree-Inception.caffemodel"
    out = tmp_path / "segfree.npz"
    caffeport.convert(model, None, out, format="npz")
    original = caffeport.read(model)
    with np.load(out) as z:
        dtypes = set()
        for layer in original:
            for i, blob in enumerate(layer.blobs):
                _same_bits(z[f"{layer.name}/{i}"], blob, f"{layer.name}/{i}")
                dtypes.add(z[f"{layer.name}/{i}"].dtype)
    assert dtypes == {np.dtype(np.float16), np.dtype(np.float32)}


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_npz_uses_the_backends_weight_names(backend: str, tmp_path: Path) -> None:
    out, result = _convert("b_resnet_block", tmp_path, "npz", backend)
    with np.load(out) as z:
        keys = set(z.files) - {"__caffeport__"}
        expected = {f"{la.name}/{w}": _as_written(la, b)
                    for la in result.net for w, b in zip(la.weight_names, la.blobs)}
        assert keys == set(expected)
        for key, blob in expected.items():
            _same_bits(z[key], blob, key)
        assert json.loads(str(z["__caffeport__"][()]))["batchnorm_eps"] == B_RESNET_EPS
    assert ("bn_conv0/gamma" if backend == "tensorflow" else "bn_conv0/weight") in keys


def test_npz_is_reproducible_and_stored_with_zip64(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    first, _ = _convert("a_lenet", tmp_path / "1", "npz")
    second, _ = _convert("a_lenet", tmp_path / "2", "npz")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        assert "conv1/0.npy" in archive.namelist()


# ---------------------------------------------------------------- safetensors: PyTorch mirrors


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
    out, result = _convert(name, tmp_path, "safetensors")
    assert result.backend == "torch"
    mirror = TORCH_MIRRORS[name]()
    state = safetensors.torch.load_file(out)
    mirror.caffe.load_state_dict(state, strict=True)  # keys <layer>.<tensor>: the mirror's submodules by layer name
    expected = _expected_outputs(name)
    got = run_torch(mirror, _inputs(name))
    add_split_copies(got, expected)
    assert_all_close(got, expected)


@pytest.mark.parametrize("name", REFERENCE)
def test_safetensors_values_and_header_follow_the_format(name: str, tmp_path: Path) -> None:
    out, result = _convert(name, tmp_path, "safetensors")
    tensors = safetensors.numpy.load_file(out)
    expected = {n: _as_written(la, b) for la in result.net for n, b in safetensors_format.layer_tensors(la)}
    assert set(tensors) == set(expected)
    for key, blob in expected.items():
        _same_bits(tensors[key], blob, key)
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
    out, _ = _convert("b_resnet_block", tmp_path, "safetensors")
    with safetensors.safe_open(out, "np") as f:
        metadata = f.metadata()
        keys = set(f.keys())
    assert metadata["format"] == "pt" and metadata["backend"] == "torch"
    assert json.loads(metadata["batchnorm_eps"]) == B_RESNET_EPS
    assert json.loads(metadata["name_map"]) == {}
    assert json.loads(metadata["source"])["caffemodel"] == str(_files("b_resnet_block")[0])
    assert json.loads(metadata["fused"])["scale_conv0"] == "bn_conv0"
    bn = {"bn_conv0.weight", "bn_conv0.bias", "bn_conv0.running_mean", "bn_conv0.running_var",
          "bn_conv0.num_batches_tracked"}
    assert bn <= keys and "conv0.weight" in keys and "conv0.bias" not in keys
    counter = safetensors.torch.load_file(out)["bn_conv0.num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.shape == () and int(counter) == 0


def test_safetensors_names_with_other_backends(tmp_path: Path) -> None:
    out, result = _convert("d_grouped", tmp_path, "safetensors", "caffe")
    assert set(safetensors.numpy.load_file(out)) == {f"{la.name}.{i}" for la in result.net
                                                     for i in range(len(la.blobs))}
    with safetensors.safe_open(out, "np") as f:
        assert "format" not in f.metadata() and f.metadata()["backend"] == "caffe"
    keras = tmp_path / "keras.safetensors"
    caffeport.convert(*_files("d_grouped"), keras, format="safetensors", backend="tensorflow")
    names = set(safetensors.numpy.load_file(keras))
    assert {"conv_dw.depthwise_kernel", "conv_g2.kernel", "scale_b.scale", "scale_b.bias"} <= names


def test_safetensors_keeps_fp16_with_backend_caffe(tmp_path: Path) -> None:
    model = models_dir() / "hyperlpr-finemapping" / "fp16" / "HorizonalFinemapping.caffemodel"
    out = tmp_path / "fp16.safetensors"
    caffeport.convert(model, None, out, format="safetensors", backend="caffe")
    tensors = safetensors.numpy.load_file(out)
    for layer in caffeport.read(model):
        for i, blob in enumerate(layer.blobs):
            _same_bits(tensors[f"{layer.name}.{i}"], blob, f"{layer.name}.{i}")
    assert {t.dtype for t in tensors.values()} == {np.dtype(np.float16)}


@pytest.mark.parametrize(("fmt", "backend"), [("npz", "torch"), ("npz", "tensorflow"), ("safetensors", "torch"),
                                              ("safetensors", "tensorflow"), ("flax", "tensorflow")])
def test_fp16_weights_are_widened_once_a_backend_converts_them(fmt: str, backend: str, tmp_path: Path) -> None:
    """Transforms hand over fp16 views; frameworks get float32 throughout, widened exactly."""
    model = models_dir() / "hyperlpr-segfree-fp16" / "SegmenationFree-Inception.caffemodel"
    out = tmp_path / f"segfree.{fmt}"
    result = caffeport.convert(model, model.with_suffix(".prototxt"), out, format=fmt, backend=backend)
    if fmt == "npz":
        with np.load(out) as z:
            arrays = {k: z[k] for k in z.files if k != "__caffeport__"}
    elif fmt == "safetensors":
        arrays = safetensors.numpy.load_file(out)
    else:
        arrays = {"/".join(str(k) for k in path): np.asarray(leaf) for path, leaf in
                  jax.tree_util.tree_flatten_with_path(serialization.msgpack_restore(out.read_bytes()))[0]}
    floats = {k: a.dtype for k, a in arrays.items() if not k.endswith("num_batches_tracked")}
    assert floats and set(floats.values()) == {np.dtype(np.float32)}
    conv = next(la for la in result.net if la.target.startswith("Conv") and la.blobs)
    assert np.dtype(conv.blobs[0].dtype) == np.float16  # so the check above is not vacuous


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
    out = _write(caffeport.transform(net, "torch"), tmp_path / "bn.safetensors", "safetensors")
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
    out = _write(caffeport.transform(net, "torch"), tmp_path / "rnn.safetensors", "safetensors")
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


# ---------------------------------------------------------------- odd blobs, in every format


def _odd_net() -> Net:
    """Blobs the writers must stream right: transposed, big-endian, fp16, float64, int32, 0-d, empty."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    blobs = [base.T, np.arange(6, dtype=">f4").reshape(2, 3), np.linspace(-1, 1, 7, dtype=np.float16),
             np.array([1e-300, 3.5]), np.array([-3, 7], dtype=np.int32), np.array(2.5, dtype=np.float32),
             np.zeros((0, 3), dtype=np.float32)]
    return Net(name="odd", layers=[Layer("odd", "Parameter", tops=["odd"], blobs=blobs)])


@pytest.mark.parametrize("chunk_bytes", [5, 16 * 1024 * 1024])
def test_odd_blobs_round_trip_in_every_format(chunk_bytes: int, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(npz_format, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(safetensors_format, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(msgpack_format, "CHUNK_BYTES", chunk_bytes)
    net = _odd_net()
    blobs = net.layers[0].blobs
    with np.load(_write(net, tmp_path / "odd.npz", "npz")) as z:
        npz = {key: z[key] for key in z.files}
    tensors = safetensors.numpy.load_file(_write(net, tmp_path / "odd.safetensors", "safetensors"))
    flax_tree = serialization.msgpack_restore(_write(net, tmp_path / "odd.msgpack", "flax").read_bytes())
    loaded = load_ir(_write(net, tmp_path / "odd.ir", "ir")).layers[0].blobs
    for i, blob in enumerate(blobs):
        little = np.asarray(blob, dtype=blob.dtype.newbyteorder("<"))
        _same_bits(npz[f"odd/{i}"], little, f"npz {i}")
        _same_bits(tensors[f"odd.{i}"], little, f"safetensors {i}")
        _same_bits(flax_tree["params"]["odd"][str(i)], little, f"flax {i}")
        _same_bits(loaded[i], little, f"ir {i}")


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    one = np.zeros(2, dtype=np.float32)
    net = Net(layers=[Layer("a", "Bias", blobs=[one]), Layer("a", "Bias", blobs=[one])])
    for fmt in ("npz", "safetensors", "flax"):
        with pytest.raises(ModelStructureError, match="'a'"):
            _write(net, tmp_path / f"dup.{fmt}", fmt)


# ---------------------------------------------------------------- flax


def _flax_expected(net: Net) -> dict[str, dict[str, Any]]:
    """The documented Flax tree, restated from the tensorflow backend's Keras-layout blobs."""
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for layer in net:
        if not layer.blobs:
            continue
        w = {name: _as_written(layer, b) for name, b in zip(layer.weight_names, layer.blobs)}
        if layer.target == "LSTM":
            h = w["recurrent_kernel"].shape[0]
            tree: dict[str, Any] = {}
            for k, gate in enumerate("ifgo"):  # Keras blocks i, f, c, o
                tree[f"i{gate}"] = {"kernel": w["kernel"][:, k * h : (k + 1) * h]}
                tree[f"h{gate}"] = {"kernel": w["recurrent_kernel"][:, k * h : (k + 1) * h],
                                    "bias": w["bias"][k * h : (k + 1) * h]}
            params[layer.name] = tree
        elif layer.target == "BatchNormalization":
            params[layer.name] = {"scale": w["gamma"], "bias": w["beta"]}
            stats[layer.name] = {"mean": w["moving_mean"], "var": w["moving_variance"]}
        elif layer.target == "DepthwiseConv2D":
            kh, kw, c, m = w["depthwise_kernel"].shape
            params[layer.name] = {"kernel": w["depthwise_kernel"].reshape(kh, kw, 1, c * m), "bias": w["bias"]}
        elif layer.target == "Embedding":
            params[layer.name] = {"embedding": w["embeddings"]}
        elif layer.target == "PReLU":
            alpha = w["alpha"]
            params[layer.name] = {"negative_slope": alpha.reshape(()) if alpha.size == 1 else alpha}
        else:
            params[layer.name] = dict(w)
    return {"batch_stats": stats, "params": params}


def _assert_same_tree(got: Any, want: Any, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _assert_same_tree(got[key], want[key], f"{path}/{key}")
    else:
        _same_bits(np.asarray(got), want, path)


@pytest.mark.parametrize("name", REFERENCE)
def test_flax_restores_the_keras_blobs_under_flax_names(name: str, tmp_path: Path) -> None:
    out, result = _convert(name, tmp_path, "flax")
    assert result.backend == "tensorflow"
    keras = caffeport.transform(caffeport.read(*_files(name)), "tensorflow")
    expected = _flax_expected(keras)
    data = out.read_bytes()
    _assert_same_tree(serialization.msgpack_restore(data), expected)
    assert data == serialization.msgpack_serialize(expected), "not the bytes Flax writes for the same variables"


def test_flax_splits_big_arrays_as_flax_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(msgpack_format, "FLAX_MAX_CHUNK_BYTES", 48)
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 48)
    keras = caffeport.transform(caffeport.read(*_files("c_deconv_prelu")), "tensorflow")
    data = _write(keras, tmp_path / "chunked.msgpack", "flax").read_bytes()
    assert b"__msgpack_chunked_array__" in data
    expected = _flax_expected(keras)
    assert data == serialization.msgpack_serialize(expected)
    _assert_same_tree(serialization.msgpack_restore(data), expected)


def _crop(x: jax.Array, pad: int) -> jax.Array:
    return x[:, pad:-pad, pad:-pad, :] if pad else x


class _ChannelPReLU(fnn.Module):
    """A per-channel PReLU: ``negative_slope`` in Keras' alpha shape (1, 1, C)."""

    channels: int

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param("negative_slope", fnn.initializers.zeros, (1, 1, self.channels))
        return jnp.where(x >= 0, x, slope * x)


class _Affine(fnn.Module):
    """Caffe's Scale (``scale``, optional ``bias``) or Bias (``bias`` only) over the last axis."""

    channels: int
    scale: bool
    bias: bool

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.scale:
            x = x * self.param("scale", fnn.initializers.ones, (self.channels,))
        if self.bias:
            x = x + self.param("bias", fnn.initializers.zeros, (self.channels,))
        return x


def _same(pad: int) -> list[tuple[int, int]]:
    return [(pad, pad), (pad, pad)]


class _FlaxLenet(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["conv1__conv1"] = fnn.Conv(20, (5, 5), padding="VALID", name="conv1")(data)
        x = out["pool1__pool1"] = fnn.max_pool(x, (2, 2), (2, 2))
        x = out["conv2__conv2"] = fnn.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
        x = out["pool2__pool2"] = fnn.max_pool(x, (2, 2), (2, 2))
        x = out["ip1__ip1"] = fnn.Dense(500, name="ip1")(x.reshape(x.shape[0], -1))  # NHWC flatten
        x = out["ip2__ip2"] = fnn.Dense(10, name="ip2")(fnn.relu(x))
        out["prob__prob"] = jax.nn.softmax(x, axis=-1)
        return out


class _FlaxResnetBlock(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}

        def conv_bn(x: jax.Array, name: str, features: int, kernel: int, stride: int) -> jax.Array:
            x = fnn.Conv(features, (kernel, kernel), (stride, stride), padding=_same(kernel // 2), use_bias=False,
                         name=name)(x)
            bn = fnn.BatchNorm(use_running_average=True, epsilon=B_RESNET_EPS[f"bn_{name}"], name=f"bn_{name}")
            out[f"scale_{name}__{name}"] = y = bn(x)
            return y

        conv0 = fnn.relu(conv_bn(data, "conv0", 16, 3, 1))
        x = fnn.relu(conv_bn(conv0, "res1_a", 16, 3, 1))
        res1 = out["res1_relu__res1"] = fnn.relu(conv0 + conv_bn(x, "res1_b", 16, 3, 1))
        x = fnn.relu(conv_bn(res1, "res2_a", 32, 3, 2))
        x = conv_bn(res1, "res2_proj", 32, 1, 2) + conv_bn(x, "res2_b", 32, 3, 1)
        x = out["res2_relu__res2"] = fnn.relu(x)
        x = out["fc__fc"] = fnn.Dense(10, name="fc")(jnp.mean(x, axis=(1, 2)))
        out["prob__prob"] = jax.nn.softmax(x, axis=-1)
        return out


class _FlaxDeconvPrelu(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["conv1__conv1"] = fnn.Conv(8, (3, 3), padding=_same(1), name="conv1")(data)
        x = out["prelu1__prelu1"] = _ChannelPReLU(8, name="prelu1")(x)
        x = out["conv2__conv2"] = fnn.Conv(8, (3, 3), padding=_same(1), name="conv2")(x)
        x = out["prelu2__conv2"] = fnn.PReLU(name="prelu2")(x)  # channel_shared: Flax's own scalar PReLU
        deconv = fnn.ConvTranspose(4, (4, 4), (2, 2), padding="VALID", transpose_kernel=True, name="deconv")
        out["deconv__deconv"] = _crop(deconv(x), 1)
        return out


class _FlaxGrouped(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["conv_g2__conv_g2"] = fnn.Conv(8, (3, 3), padding=_same(1), feature_group_count=2,
                                               name="conv_g2")(data)
        x = out["conv_dw__conv_dw"] = fnn.Conv(8, (3, 3), (2, 2), padding=_same(1), feature_group_count=8,
                                               name="conv_dw")(x)
        x = out["scale__scale"] = _Affine(8, scale=True, bias=False, name="scale")(x)
        x = out["bias__bias"] = _Affine(8, scale=False, bias=True, name="bias")(x)
        x = out["scale_b__scale_b"] = _Affine(8, scale=True, bias=True, name="scale_b")(x)
        x = out["relu__relu"] = fnn.relu(x)
        out["conv_pw__conv_pw"] = fnn.Conv(6, (1, 1), name="conv_pw")(x)
        return out


class _FlaxRecurrent(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array, cont: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = fnn.Embed(20, 8, name="embed")(data.astype(jnp.int32))
        x = out["embed__embed"] = _Affine(8, scale=False, bias=True, name="embed_bias")(x)
        cell = fnn.LSTMCell(16, name="lstm")
        c = h = jnp.zeros((data.shape[1], 16))
        hs = []
        for t in range(data.shape[0]):
            keep = cont[t][:, None]  # cont == 0 starts the stream afresh
            (c, h), y = cell((c * keep, h * keep), x[t])
            hs.append(y)
        x = out["lstm__lstm"] = jnp.stack(hs)
        out["ip__ip"] = fnn.Dense(5, name="ip")(x)
        return out


FLAX_MIRRORS: dict[str, Callable[[], fnn.Module]] = {
    "a_lenet": _FlaxLenet, "a_lenet_v1": _FlaxLenet, "b_resnet_block": _FlaxResnetBlock,
    "c_deconv_prelu": _FlaxDeconvPrelu, "d_grouped": _FlaxGrouped, "e_recurrent": _FlaxRecurrent,
}


@pytest.mark.parametrize("name", REFERENCE)
def test_flax_variables_fit_flax_modules_that_reproduce_caffe(name: str, tmp_path: Path) -> None:
    out, _ = _convert(name, tmp_path, "flax")
    inputs = {k: jnp.asarray(to_nhwc(v)) for k, v in _inputs(name).items()}
    model = FLAX_MIRRORS[name]()
    template = model.init(jax.random.PRNGKey(0), *inputs.values())
    variables = serialization.msgpack_restore(out.read_bytes())
    shapes = jax.tree_util.tree_map(lambda a: a.shape, {"batch_stats": {}, **template})
    assert jax.tree_util.tree_map(lambda a: a.shape, variables) == shapes, "not the variables the model expects"
    restored = serialization.from_bytes(template, out.read_bytes())  # Flax's own template-checked restore
    got = cast(dict[str, jax.Array], model.apply(restored, *inputs.values()))
    expected = _expected_outputs(name)
    for key, value in got.items():
        assert_close(key, to_nchw(np.asarray(value)), expected[key], RTOL)
    final = [k for k in expected if k.split("__")[0] in ("prob", "deconv", "conv_pw", "ip")]
    assert final and set(final) <= set(got), f"{name}: the final outputs {final} were not compared"


# ---------------------------------------------------------------- ir


def _shared_caffemodels() -> list[str]:
    found = sorted({str(p.relative_to(SHARED_MODELS)) for pattern in ("**/*.caffemodel", "**/*.caffemodel.h5")
                    for p in SHARED_MODELS.glob(pattern)})
    return found or ["(no caffemodel found in the shared models)"]  # one failing case, never an empty skip


def _assert_same_ir(got: Net, want: Net) -> None:
    for attribute in ("name", "format", "inputs", "caffemodel_path", "prototxt_path", "match", "warnings",
                      "report", "metadata"):
        assert getattr(got, attribute) == getattr(want, attribute), attribute
    assert [la.name for la in got] == [la.name for la in want]
    for a, b in zip(want, got):
        for attribute in ("type", "bottoms", "tops", "params", "bottom_shapes", "top_shapes", "weight_names",
                          "target"):
            assert getattr(b, attribute) == getattr(a, attribute), f"{a.name}: {attribute}"
        assert len(b.blobs) == len(a.blobs), a.name
        for i, (x, y) in enumerate(zip(a.blobs, b.blobs)):
            _same_bits(y, x, f"{a.name} blob {i}")  # bit for bit, NaNs included


@pytest.mark.parametrize("model", _shared_caffemodels())
def test_ir_round_trips_every_shared_caffemodel(model: str, tmp_path: Path) -> None:
    path = models_dir() / model
    out = tmp_path / "net.ir"
    caffeport.convert(path, None, out, format="ir")
    original = caffeport.read(path)
    original.metadata["backend"] = "caffe"  # the (identity) backend the conversion records
    _assert_same_ir(load_ir(out), original)


@pytest.mark.parametrize("backend", ["caffe", "tensorflow", "torch"])
@pytest.mark.parametrize("name", REFERENCE)
def test_ir_round_trips_converted_nets(name: str, backend: str, tmp_path: Path) -> None:
    out, result = _convert(name, tmp_path, "ir", backend)
    loaded = load_ir(out)
    _assert_same_ir(loaded, result.net)
    assert all(not b.flags.writeable for la in loaded for b in la.blobs)
    if backend != "caffe":
        assert any(la.weight_names and la.target for la in loaded) and loaded.report


def test_ir_is_plain_msgpack_with_the_documented_layout(tmp_path: Path) -> None:
    out, result = _convert("e_recurrent", tmp_path, "ir")

    def no_ext(code: int, data: bytes) -> None:
        raise AssertionError(f"extension type {code} in an IR file")

    document = msgpack.unpackb(out.read_bytes(), raw=False, ext_hook=no_ext)
    assert list(document) == [IR_KEY, "name", "format", "caffemodel_path", "prototxt_path", "inputs", "warnings",
                              "match", "report", "metadata", "layers"]
    assert document[IR_KEY] == IR_VERSION and document["inputs"] == {"data": [6, 2], "cont": [6, 2]}
    lstm = next(la for la in document["layers"] if la["name"] == "lstm")
    blob = lstm["blobs"][0]
    assert set(blob) == {"dtype", "shape", "data"} and blob["dtype"] == "<f4" and blob["shape"] == [64, 8]
    original = result.net.layer("lstm").blobs[0]
    assert blob["data"] == np.ascontiguousarray(original, dtype="<f4").tobytes()


def test_ir_keeps_report_match_and_metadata(tmp_path: Path) -> None:
    net = Net(name="n", format="V2", match=MatchReport(["a"], ["b"]), warnings=["w"],
              report=[ReportEntry("l", "fused", "x")], metadata={"backend": "x", "eps": {"bn": 1e-5}},
              inputs={"data": (1, 2)}, layers=[Layer("l", "Scale", ["data"], ["data"], {"scale_param": {"axis": 1}},
                                                     [np.ones(2, np.float32)], [(1, 2)], [None], ["w"], "T")])
    _assert_same_ir(load_ir(_write(net, tmp_path / "n.ir", "ir")), net)


def test_load_ir_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    good = _write(Net(name="n", layers=[Layer("l", "Bias", blobs=[np.ones(3, np.float32)])]), tmp_path / "g.ir", "ir")
    raw = good.read_bytes()
    cases: dict[str, tuple[bytes, type[CaffeportError], str]] = {
        "newer": (raw.replace(b"\xaccaffeport_ir\x01", b"\xaccaffeport_ir\x02"), InputFileError, "version 2"),
        "other": (msgpack.packb({"params": {}}), InputFileError, "not a caffeport IR file"),
        "truncated": (raw[:-5], DecodeError, "msgpack"),
        "trailing": (raw + b"\x00", DecodeError, "trailing"),
        "ext": (msgpack.packb({IR_KEY: msgpack.ExtType(1, b"x")}), DecodeError, "extension"),
        "short-blob": (raw.replace(b"\xc4\x0c", b"\xc4\x0b", 1)[:-1], DecodeError, "data bytes"),
        "empty": (b"", InputFileError, "empty"),
    }
    for case, (data, error, message) in cases.items():
        path = tmp_path / f"{case}.ir"
        path.write_bytes(data)
        with pytest.raises(error, match=message):
            load_ir(path)
    with pytest.raises(InputFileError):
        load_ir(tmp_path / "missing.ir")


# ---------------------------------------------------------------- packaging


def test_optional_packages_are_imported_only_when_writing() -> None:
    code = ("import sys, caffeport; from caffeport.exporters import load_exporters; load_exporters(); "
            "import caffeport.ir_file; "
            "print([m for m in ('msgpack', 'safetensors', 'flax', 'jax', 'torch', 'tensorflow') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"
    assert {"npz", "safetensors", "flax", "ir"} <= set(load_exporters())


@pytest.mark.parametrize("fmt", ["flax", "ir"])
def test_missing_msgpack_names_the_extra(fmt: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "msgpack", None)  # makes "import msgpack" fail
    with pytest.raises(CaffeportError, match=r"pip install caffeport\[msgpack\]"):
        caffeport.convert(*_files("a_lenet"), tmp_path / "out", format=fmt)
    assert not (tmp_path / "out").exists()
    with pytest.raises(CaffeportError, match=r"pip install caffeport\[msgpack\]"):
        load_ir(tmp_path / "whatever.ir")


class _HugeLazyBlob:
    """A lazy blob (`caffeport.blocks.LazyBlob`) too big for one msgpack binary string; never read."""

    shape = (2**30 + 1,)
    dtype = np.dtype(np.float32)

    def iter_chunks(self, max_elements: int) -> Any:
        raise AssertionError("the writer read a blob it should have refused from its size")


def test_ir_refuses_what_msgpack_cannot_hold(tmp_path: Path) -> None:
    huge = Net(layers=[Layer("big", "InnerProduct", blobs=[_HugeLazyBlob()])])  # type: ignore[list-item]
    with pytest.raises(CaffeportError, match=r"'big'.*at most"):
        _write(huge, tmp_path / "huge.ir", "ir")
    odd = Net(layers=[Layer("l", "Bias")], metadata={"eps": np.float32(1e-5)})
    with pytest.raises(ModelStructureError, match="metadata"):
        _write(odd, tmp_path / "odd.ir", "ir")
