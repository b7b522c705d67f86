"""Shared pieces of the numeric proof tests: model paths, inputs, tolerances and
an independent numpy forward pass in Caffe's own semantics.

The numpy forward (`caffe_forward`) runs a `caffeport.read` net on the raw,
untransformed Caffe blobs (NCHW, cross-correlation, ceil-mode pooling, BatchNorm
blobs divided by their scale factor here, LSTM gates in Caffe's i, f, o, g
order). It is checked against Caffe's own outputs on the caffe-reference models
(test_caffe_numpy_reference.py) and then serves as the ground truth for the
MTCNN nets, which come without reference outputs.

No keras or torch here: both test modules import this one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from caffeport.ir import Layer, Net
from tests.conftest import models_dir

#: caffe-reference models with Caffe's own per-layer outputs
REFERENCE_MODELS = ["a_lenet", "b_resnet_block", "c_deconv_prelu", "d_grouped", "e_recurrent"]
#: MTCNN nets: real trained weights, no reference outputs
MTCNN_MODELS = ["det1", "det2", "det3", "det4"]

#: largest accepted relative error: max |got - want| / max |want|
RTOL = 1e-4

#: Caffe's BatchNorm eps per layer, as written in b_resnet_block's deploy.prototxt
B_RESNET_EPS = {
    "bn_conv0": 1e-5,
    "bn_res1_a": 1e-5,
    "bn_res1_b": 1e-3,
    "bn_res2_a": 1e-5,
    "bn_res2_b": 1e-5,
    "bn_res2_proj": 1e-5,
}


# ---------------------------------------------------------------- files


def model_files(name: str) -> tuple[Path, Path]:
    """(caffemodel, prototxt) of a caffe-reference model or an MTCNN net."""
    root = models_dir()
    if name in MTCNN_MODELS:
        return root / "mtcnn" / f"{name}.caffemodel", root / "mtcnn" / f"{name}.prototxt"
    folder = root / "caffe-reference" / name
    return folder / f"{name}.caffemodel", folder / "deploy.prototxt"


def reference_inputs(name: str) -> dict[str, np.ndarray]:
    """The inputs Caffe was fed, by net input name (Caffe layout)."""
    folder = models_dir() / "caffe-reference" / name
    if (folder / "inputs.npz").is_file():
        with np.load(folder / "inputs.npz") as z:
            return {key: z[key] for key in z.files}
    return {"data": np.load(folder / "input.npy")}


def reference_outputs(name: str) -> dict[str, np.ndarray]:
    """Caffe's ``<layer>__<top>`` outputs right after each layer ran."""
    with np.load(models_dir() / "caffe-reference" / name / "outputs_per_layer.npz") as z:
        return {key: z[key] for key in z.files}


def mtcnn_input(net: Net, batch: int = 2, seed: int = 20240601) -> dict[str, np.ndarray]:
    """A fixed pseudo-image in [-1, 1] (MTCNN's (x - 127.5) / 128 range) for each net input."""
    rng = np.random.default_rng(seed)
    return {
        blob: rng.uniform(-1.0, 1.0, size=(batch, *shape[1:])).astype(np.float32) for blob, shape in net.inputs.items()
    }


# ---------------------------------------------------------------- comparing


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (max |want| floored at 1e-6)."""
    got64 = np.asarray(got, dtype=np.float64)
    want64 = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want64))) if want64.size else 0.0, 1e-6)
    return float(np.max(np.abs(got64 - want64))) / scale if want64.size else 0.0


def assert_close(key: str, got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    """Fail naming ``key`` when shapes differ or the relative error exceeds ``rtol``."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{key}: shape {got.shape}, expected {want.shape}"
    assert np.all(np.isfinite(got)), f"{key}: non-finite values in the output"
    err = rel_error(got, want)
    if err > rtol:
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        where = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise AssertionError(
            f"{key}: relative error {err:.3g} > {rtol:g} (max abs diff {diff.max():.4g} at {where}: "
            f"got {got[where]:.6g}, expected {want[where]:.6g}; max |expected| {np.max(np.abs(want)):.4g})"
        )


def assert_all_close(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], rtol: float = RTOL) -> None:
    """Every key of ``want`` must be in ``got`` and match; all failures are listed together."""
    missing = sorted(set(want) - set(got))
    assert not missing, f"the mirror model gives no output for: {missing}"
    failures = []
    for key in want:
        try:
            assert_close(key, got[key], want[key], rtol)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def add_split_copies(outputs: dict[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Fill in Caffe's auto-inserted Split outputs (copies of one blob), which no mirror model has.

    Caffe names the split of blob ``B`` after layer ``L`` ``B_L_<i>_split``; its tops are that
    blob as ``L`` left it, i.e. the value under ``L__B``.
    """
    for key in expected:
        layer = key.split("__", 1)[0]
        if key in outputs or not layer.endswith("_split"):
            continue
        sources = [
            k
            for k in outputs
            if re.fullmatch(re.escape(f"{k.split('__', 1)[1]}_{k.split('__', 1)[0]}_") + r"\d+_split", layer)
        ]
        if len(sources) == 1:
            outputs[key] = outputs[sources[0]]


def to_nchw(x: np.ndarray) -> np.ndarray:
    """NHWC -> NCHW for 4-D arrays; anything else unchanged."""
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC for 4-D arrays; anything else unchanged."""
    return np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Caffe's pooled size: rounded up, minus the last window when it starts in the padding."""
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def stream_segments(cont: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per stream (column of the (T, N) ``cont``), the [start, stop) time ranges between state resets."""
    steps, streams = cont.shape
    segments = []
    for n in range(streams):
        starts = sorted({0} | {t for t in range(steps) if cont[t, n] == 0})
        stops = [*starts[1:], steps]
        segments.append(list(zip(starts, stops)))
    return segments


# ---------------------------------------------------------------- numpy Caffe forward


def _one(values: list[int] | int | None, default: int) -> int:
    """A Caffe repeated size field that must hold one value for both spatial axes."""
    if values is None or values == []:
        return default
    if isinstance(values, int):
        return values
    if len(set(values)) != 1:
        raise NotImplementedError(f"per-axis sizes {values} are not supported by the numpy reference")
    return int(values[0])


def _conv_geometry(layer: Layer) -> tuple[int, int, int, int]:
    """(kernel, stride, pad, group) of a Convolution/Deconvolution; square only."""
    p = layer.param("convolution_param")
    if any(key in p for key in ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")):
        raise NotImplementedError(f"{layer.name}: non-square geometry is not supported by the numpy reference")
    if _one(p.get("dilation"), 1) != 1:
        raise NotImplementedError(f"{layer.name}: dilation is not supported by the numpy reference")
    return _one(p.get("kernel_size"), 0), _one(p.get("stride"), 1), _one(p.get("pad"), 0), int(p.get("group", 1))


def _convolution(layer: Layer, x: np.ndarray) -> np.ndarray:
    kernel, stride, pad, group = _conv_geometry(layer)
    weight = np.asarray(layer.blobs[0], dtype=np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    # (N, C, OH, OW, kh, kw): the input window under each output position
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    cin = x.shape[1] // group
    cout = weight.shape[0] // group
    parts = [
        np.einsum("nchwij,ocij->nohw", windows[:, g * cin : (g + 1) * cin], weight[g * cout : (g + 1) * cout])
        for g in range(group)
    ]
    y = np.concatenate(parts, axis=1)
    if len(layer.blobs) > 1:
        y = y + np.asarray(layer.blobs[1], dtype=np.float64).reshape(1, -1, 1, 1)
    return y


def _deconvolution(layer: Layer, x: np.ndarray) -> np.ndarray:
    kernel, stride, pad, group = _conv_geometry(layer)
    weight = np.asarray(layer.blobs[0], dtype=np.float64)  # (in, out/group, kh, kw)
    n, c, h, w = x.shape
    cin = c // group
    cout = weight.shape[1]
    full = np.zeros((n, cout * group, (h - 1) * stride + kernel, (w - 1) * stride + kernel))
    for g in range(group):
        xg = x[:, g * cin : (g + 1) * cin]
        wg = weight[g * cin : (g + 1) * cin]
        for i in range(kernel):
            for j in range(kernel):
                # every input pixel scatters its kernel tap (i, j) to (y*s + i, x*s + j)
                full[:, g * cout : (g + 1) * cout, i : i + stride * h : stride, j : j + stride * w : stride] += (
                    np.einsum("nchw,co->nohw", xg, wg[:, :, i, j])
                )
    y = full[:, :, pad : full.shape[2] - pad, pad : full.shape[3] - pad]
    if len(layer.blobs) > 1:
        y = y + np.asarray(layer.blobs[1], dtype=np.float64).reshape(1, -1, 1, 1)
    return y


def _pooling(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.param("pooling_param")
    n, c, h, w = x.shape
    if p.get("global_pooling"):
        kernel_h, kernel_w, stride, pad = h, w, 1, 0
    else:
        kernel_h = kernel_w = _one(p.get("kernel_size"), 0)
        stride, pad = _one(p.get("stride"), 1), _one(p.get("pad"), 0)
    if p.get("round_mode", "CEIL") != "CEIL":
        raise NotImplementedError(f"{layer.name}: round_mode {p.get('round_mode')} is not supported here")
    out_h = caffe_pool_size(h, kernel_h, stride, pad)
    out_w = caffe_pool_size(w, kernel_w, stride, pad)
    y = np.empty((n, c, out_h, out_w))
    for oh in range(out_h):
        for ow in range(out_w):
            hs, ws = oh * stride - pad, ow * stride - pad
            he, we = min(hs + kernel_h, h + pad), min(ws + kernel_w, w + pad)
            area = (he - hs) * (we - ws)  # Caffe's AVE divisor counts the padding, not what lies beyond it
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            if p.get("pool", "MAX") == "MAX":
                y[:, :, oh, ow] = window.max(axis=(2, 3))
            elif p.get("pool") == "AVE":
                y[:, :, oh, ow] = window.sum(axis=(2, 3)) / area
            else:
                raise NotImplementedError(f"{layer.name}: pool {p.get('pool')}")
    return y


def _inner_product(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.param("inner_product_param")
    axis = int(p.get("axis", 1)) % x.ndim
    weight = np.asarray(layer.blobs[0], dtype=np.float64)
    weight = weight.reshape(weight.shape[-2:])  # legacy (1, 1, out, in)
    if p.get("transpose"):
        weight = weight.T
    lead = x.shape[:axis]
    y = x.reshape(math.prod(lead), -1) @ weight.T
    if len(layer.blobs) > 1:
        y = y + np.asarray(layer.blobs[1], dtype=np.float64).reshape(1, -1)
    return y.reshape(*lead, weight.shape[0])


def _per_channel(blob: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) blob shaped to broadcast over axis 1 of an ``ndim``-D blob."""
    return np.asarray(blob, dtype=np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def _batch_norm(layer: Layer, x: np.ndarray) -> np.ndarray:
    p = layer.param("batch_norm_param")
    factor = float(np.asarray(layer.blobs[2]).reshape(-1)[0])
    factor = 0.0 if factor == 0 else 1.0 / factor
    mean = _per_channel(layer.blobs[0], x.ndim) * factor
    var = _per_channel(layer.blobs[1], x.ndim) * factor
    return (x - mean) / np.sqrt(var + float(p.get("eps", 1e-5)))


def _prelu(layer: Layer, x: np.ndarray) -> np.ndarray:
    slope = np.asarray(layer.blobs[0], dtype=np.float64)
    slope = slope.reshape(()) if slope.size == 1 else _per_channel(slope, x.ndim)
    return np.where(x > 0, x, x * slope)


def _softmax(layer: Layer, x: np.ndarray) -> np.ndarray:
    axis = int(layer.param("softmax_param").get("axis", 1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _lstm(layer: Layer, x: np.ndarray, cont: np.ndarray) -> np.ndarray:
    w_xc, b_c, w_hc = (np.asarray(b, dtype=np.float64) for b in layer.blobs[:3])
    steps, streams = x.shape[:2]
    hidden = w_hc.shape[1]
    h = np.zeros((streams, hidden))
    c = np.zeros((streams, hidden))
    out = np.empty((steps, streams, hidden))

    def sigmoid(v: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-v))

    for t in range(steps):
        keep = cont[t].reshape(streams, 1)
        h_prev, c_prev = h * keep, c * keep
        gates = x[t].reshape(streams, -1) @ w_xc.T + b_c + h_prev @ w_hc.T
        i, f, o, g = (gates[:, k * hidden : (k + 1) * hidden] for k in range(4))  # Caffe: i, f, o, g
        c = sigmoid(f) * c_prev + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out[t] = h
    return out


def caffe_forward(net: Net, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``net`` in float64 with Caffe's semantics; ``<layer>__<top>`` -> value right after that layer.

    In-place layers overwrite their blob, so each key holds the value the layer produced.
    Values come back as float32, like Caffe's.
    """
    blobs: dict[str, np.ndarray] = {name: np.asarray(v, dtype=np.float64) for name, v in inputs.items()}
    outputs: dict[str, np.ndarray] = {}
    for layer in net:
        kind = layer.type
        bottoms = [blobs[b] for b in layer.bottoms]
        x = bottoms[0] if bottoms else None
        if kind == "Input":
            tops = [blobs[t] for t in layer.tops]
        elif kind == "Convolution":
            tops = [_convolution(layer, x)]
        elif kind == "Deconvolution":
            tops = [_deconvolution(layer, x)]
        elif kind == "Pooling":
            tops = [_pooling(layer, x)]
        elif kind == "InnerProduct":
            tops = [_inner_product(layer, x)]
        elif kind == "ReLU":
            slope = float(layer.param("relu_param").get("negative_slope", 0.0))
            tops = [np.where(x > 0, x, x * slope)]
        elif kind == "PReLU":
            tops = [_prelu(layer, x)]
        elif kind == "Softmax":
            tops = [_softmax(layer, x)]
        elif kind == "BatchNorm":
            tops = [_batch_norm(layer, x)]
        elif kind == "Scale":
            if len(bottoms) != 1:
                raise NotImplementedError(f"{layer.name}: Scale with a second bottom")
            y = x * _per_channel(layer.blobs[0], x.ndim)
            if len(layer.blobs) > 1:
                y = y + _per_channel(layer.blobs[1], x.ndim)
            tops = [y]
        elif kind == "Bias":
            tops = [x + _per_channel(layer.blobs[0], x.ndim)]
        elif kind == "Eltwise":
            p = layer.param("eltwise_param")
            if p.get("operation", "SUM") != "SUM":
                raise NotImplementedError(f"{layer.name}: Eltwise {p.get('operation')}")
            coeffs = p.get("coeff") or [1.0] * len(bottoms)
            tops = [sum(float(k) * b for k, b in zip(coeffs, bottoms))]
        elif kind in ("Split", "Dropout"):
            tops = [x for _ in layer.tops]
        elif kind == "Concat":
            tops = [np.concatenate(bottoms, axis=int(layer.param("concat_param").get("axis", 1)))]
        elif kind == "Slice":
            p = layer.param("slice_param")
            axis = int(p.get("axis", 1))
            points = p.get("slice_point") or []
            tops = np.split(x, points, axis=axis) if points else np.split(x, len(layer.tops), axis=axis)
        elif kind == "Embed":
            y = np.asarray(layer.blobs[0], dtype=np.float64)[x.astype(np.int64)]
            if len(layer.blobs) > 1:
                y = y + np.asarray(layer.blobs[1], dtype=np.float64)
            tops = [y]
        elif kind == "LSTM":
            tops = [_lstm(layer, x, bottoms[1])]
        else:
            raise NotImplementedError(f"{layer.name}: layer type {kind} is not in the numpy reference")
        assert len(tops) == len(layer.tops), f"{layer.name}: {len(tops)} values for tops {layer.tops}"
        for top, value in zip(layer.tops, tops):
            blobs[top] = value
            outputs[f"{layer.name}__{top}"] = value.astype(np.float32)
    return outputs
