"""Reference forwards of Convolution (and the depthwise forks), Deconvolution, Pooling and SPP.

Expected values come from deliberately naive loops written here from Caffe's
sources (conv_layer/im2col, deconv col2im, pooling_layer.cpp's Forward_cpu,
spp_layer.cpp's GetPoolingParam), one output position at a time, and from
Caffe's own outputs (opencv-dnn-layers, caffe-reference). Real fp16 weights
with non-square kernels (hyperlpr) are checked against torch's conv2d.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.errors import ShapeInferenceError, UnsupportedModelError
from caffeport.ir import Layer, Net
from caffeport.layers import convolution
from caffeport.layers.shapes import infer_shapes
from tests.conftest import models_dir

FLT_MAX = float(np.finfo(np.float32).max)
RTOL = 1e-4


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return rng(seed).standard_normal(shape).astype(np.float32)


def forward(type_: str, x: np.ndarray, *blobs: np.ndarray, n_tops: int = 1, **params: Any) -> list[np.ndarray]:
    """Run one layer through `caffeport.run` (blob checks and shape rule included); the tops in order."""
    tops = [f"t{i}" for i in range(n_tops)]
    layer = Layer(name="L", type=type_, bottoms=["x"], tops=tops, params=params, blobs=list(blobs))
    net = infer_shapes(Net(name="t", layers=[layer], inputs={"x": tuple(x.shape)}), strict=True)
    out = caffeport.run(net, {"x": x}, all_layers=True)
    got = [out[f"L/{t}"] for t in tops]
    for value, shape in zip(got, layer.top_shapes, strict=True):
        assert value.dtype == np.float32
        assert value.shape == shape, "forward and shape rule disagree"
    return got


def close(got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    assert got.shape == want.shape
    scale = max(float(np.abs(want).max()), 1e-30)
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale
    assert err <= rtol, f"relative error {err:.3g}"


def conv(**kw: Any) -> dict[str, Any]:
    return {"convolution_param": kw}


def pool(**kw: Any) -> dict[str, Any]:
    return {"pooling_param": kw}


# ----------------------------------------------------------------------------- naive references


def naive_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, group: int, stride: tuple[int, ...],
               pad: tuple[int, ...], dilation: tuple[int, ...]) -> np.ndarray:
    """Caffe's convolution, one output value at a time, in float64 (N-D)."""
    n, _, *size = x.shape
    o, cg, *kernel = w.shape
    og = o // group
    out = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1 for s, k, p, st, d in zip(size, kernel, pad, stride, dilation)]
    y = np.zeros((n, o, *out))
    for i, oc in itertools.product(range(n), range(o)):
        g = oc // og
        for pos in itertools.product(*map(range, out)):
            total = 0.0 if b is None else float(b[oc])
            for ic in range(cg):
                for tap in itertools.product(*map(range, kernel)):
                    src = [q * st - p + t * d for q, st, p, t, d in zip(pos, stride, pad, tap, dilation)]
                    if all(0 <= s < lim for s, lim in zip(src, size)):
                        total += float(x[(i, g * cg + ic, *src)]) * float(w[(oc, ic, *tap)])
            y[(i, oc, *pos)] = total
    return y


def naive_deconv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, group: int, stride: tuple[int, ...],
                 pad: tuple[int, ...], dilation: tuple[int, ...]) -> np.ndarray:
    """Caffe's deconvolution as col2im does it: every input value scattered through the kernel, then cropped."""
    n, c, *size = x.shape
    _, og, *kernel = w.shape
    cg = c // group
    out = [st * (s - 1) + d * (k - 1) + 1 - 2 * p for s, k, p, st, d in zip(size, kernel, pad, stride, dilation)]
    y = np.zeros((n, og * group, *out))
    for i, ic in itertools.product(range(n), range(c)):
        g = ic // cg
        for pos in itertools.product(*map(range, size)):
            for oc in range(og):
                for tap in itertools.product(*map(range, kernel)):
                    dst = [q * st - p + t * d for q, st, p, t, d in zip(pos, stride, pad, tap, dilation)]
                    if all(0 <= s < lim for s, lim in zip(dst, out)):
                        y[(i, g * og + oc, *dst)] += float(x[(i, ic, *pos)]) * float(w[(ic, oc, *tap)])
    if b is not None:
        y += b.reshape(-1, *([1] * len(size)))
    return y


def caffe_pooled(size: int, k: int, p: int, s: int, floor: bool, padded: bool) -> int:
    """PoolingLayer::Reshape, restated with floats as Caffe computes it."""
    out = int((math.floor if floor else math.ceil)((size + 2 * p - k) / s)) + 1
    if padded and (out - 1) * s >= size + p:
        out -= 1
    return out


def naive_pool(x: np.ndarray, method: str, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int],
               floor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """PoolingLayer::Forward_cpu, line by line: (top, mask); mask is only meaningful for MAX."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    padded = bool(ph or pw)
    oh, ow = caffe_pooled(h, kh, ph, sh, floor, padded), caffe_pooled(w, kw, pw, sw, floor, padded)
    top = np.zeros((n, c, oh, ow), np.float32)
    mask = np.full((n, c, oh, ow), -1.0, np.float32)
    for i, ch, y, z in itertools.product(range(n), range(c), range(oh), range(ow)):
        hs, ws = y * sh - ph, z * sw - pw
        if method == "MAX":
            he, we = min(hs + kh, h), min(ws + kw, w)
            hs, ws = max(hs, 0), max(ws, 0)
            best, where = np.float32(-FLT_MAX), -1
            for r in range(hs, he):
                for q in range(ws, we):
                    if x[i, ch, r, q] > best:
                        best, where = x[i, ch, r, q], r * w + q
            top[i, ch, y, z], mask[i, ch, y, z] = best, where
        else:
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            total = np.float32(0)
            for r in range(hs, he):
                for q in range(ws, we):
                    total += x[i, ch, r, q]
            with np.errstate(all="ignore"):
                top[i, ch, y, z] = total / np.float32(size)
    return top, mask


# ----------------------------------------------------------------------------- convolution


@pytest.mark.parametrize(
    ("shape", "out", "params", "group"),
    [
        ((2, 3, 7, 9), 4, {"kernel_size": [3], "pad": [1]}, 1),
        ((1, 3, 8, 7), 5, {"kernel_size": [3], "stride": [2]}, 1),  # odd sizes, stride 2, no pad
        ((1, 2, 11, 10), 3, {"kernel_size": [3], "dilation": [2], "pad": [1]}, 1),  # dilation 2
        ((1, 2, 9, 9), 2, {"kernel_size": [3, 2], "dilation": [2, 3], "stride": [2, 1]}, 1),  # per-axis lists
        ((2, 4, 6, 7), 6, {"kernel_size": [3], "pad": [1], "group": 2}, 2),  # grouped
        ((1, 4, 7, 8), 4, {"kernel_size": [3], "stride": [2], "pad": [1], "group": 2}, 2),
        ((1, 3, 6, 9), 6, {"kernel_size": [3], "pad": [1], "group": 3}, 3),  # depthwise, multiplier 2
        ((1, 3, 8, 8), 3, {"kernel_size": [3], "pad": [2], "dilation": [2], "stride": [2], "group": 3}, 3),
        ((1, 2, 5, 6), 20, {"kernel_size": [3], "group": 2}, 2),  # Cg 1 with a multiplier of 10 (the GEMM path)
        ((1, 1, 6, 6), 3, {"kernel_size": [2]}, 1),  # one input channel: Cg 1 and group 1
        ((1, 3, 9, 16), 2, {"kernel_h": 1, "kernel_w": 5, "pad_h": 0, "pad_w": 2}, 1),  # hyperlpr's 1x5
        ((1, 2, 14, 5), 3, {"kernel_h": 7, "kernel_w": 1, "pad_h": 3, "pad_w": 0, "stride_h": 2, "stride_w": 1}, 1),
        ((2, 5, 4, 6), 3, {"kernel_size": [1]}, 1),  # 1x1: no unrolling
        ((1, 4, 5, 6), 2, {"kernel_size": [1], "stride": [2], "group": 2}, 2),  # 1x1 strided
    ],
)
def test_convolution_matches_naive_loops(shape: tuple[int, ...], out: int, params: dict[str, Any],
                                         group: int) -> None:
    kernel = params.get("kernel_size", [params.get("kernel_h"), params.get("kernel_w")])
    kernel = kernel * 2 if len(kernel) == 1 else kernel
    x = rand(*shape, seed=1)
    w = rand(out, shape[1] // group, *kernel, seed=2)
    b = rand(out, seed=3)
    (got,) = forward("Convolution", x, w, b, **conv(num_output=out, **params))

    def axes(key: str, default: int) -> tuple[int, int]:
        if f"{key}_h" in params:
            return params[f"{key}_h"], params[f"{key}_w"]
        values = params.get(key, [default])
        return (values[0], values[-1]) if len(values) in (1, 2) else (default, default)

    close(got, naive_conv(x, w, b, group, axes("stride", 1), axes("pad", 0), axes("dilation", 1)))


def test_convolution_without_bias_and_with_legacy_blob_dims() -> None:
    x = rand(1, 2, 6, 5)
    w = rand(3, 2, 3, 3, seed=4)
    (got,) = forward("Convolution", x, w, **conv(num_output=3, kernel_size=[3], bias_term=False))
    close(got, naive_conv(x, w, None, 1, (1, 1), (0, 0), (1, 1)))
    # a V1 file's bias is (1, 1, 1, C)
    b = rand(3, seed=5)
    (got,) = forward("Convolution", x, w, b.reshape(1, 1, 1, 3), **conv(num_output=3, kernel_size=[3]))
    close(got, naive_conv(x, w, b, 1, (1, 1), (0, 0), (1, 1)))


def test_convolution_fp16_weights_are_used_as_float32() -> None:
    x = rand(1, 2, 5, 5)
    w = rand(2, 2, 3, 3, seed=6).astype(np.float16)
    b = rand(2, seed=7).astype(np.float64)
    (got,) = forward("Convolution", x, w, b, **conv(num_output=2, kernel_size=[3], pad=[1]))
    close(got, naive_conv(x, w.astype(np.float32), b, 1, (1, 1), (1, 1), (1, 1)))


def test_convolution_3d_and_axis() -> None:
    # N-D runs through the same code: (1, 2, 4, 5, 6) with kernel 3, pad 1, stride (1, 2, 2)
    x = rand(1, 2, 4, 5, 6)
    w = rand(3, 2, 3, 3, 3, seed=8)
    b = rand(3, seed=9)
    (got,) = forward("Convolution", x, w, b, **conv(num_output=3, kernel_size=[3], pad=[1], stride=[1, 2, 2]))
    close(got, naive_conv(x, w, b, 1, (1, 2, 2), (1, 1, 1), (1, 1, 1)))
    # axis 2: the leading (2, 5) are one batch axis of 10, one spatial axis
    x = rand(2, 5, 3, 10, seed=10)
    w = rand(4, 3, 3, seed=11)
    b = rand(4, seed=12)
    (got,) = forward("Convolution", x, w, b, **conv(num_output=4, kernel_size=[3], axis=2))
    want = naive_conv(x.reshape(10, 3, 10), w, b, 1, (1,), (0,), (1,)).reshape(2, 5, 4, 8)
    close(got, want)


def test_convolution_several_bottoms_each_get_a_top() -> None:
    x1, x2 = rand(1, 2, 5, 5, seed=1), rand(1, 2, 5, 5, seed=2)
    w, b = rand(3, 2, 3, 3, seed=3), rand(3, seed=4)
    layer = Layer(name="L", type="Convolution", bottoms=["a", "b"], tops=["ya", "yb"],
                  params=conv(num_output=3, kernel_size=[3]), blobs=[w, b])
    net = infer_shapes(Net(name="t", layers=[layer], inputs={"a": (1, 2, 5, 5), "b": (1, 2, 5, 5)}), strict=True)
    out = caffeport.run(net, {"a": x1, "b": x2})
    close(out["ya"], naive_conv(x1, w, b, 1, (1, 1), (0, 0), (1, 1)))
    close(out["yb"], naive_conv(x2, w, b, 1, (1, 1), (0, 0), (1, 1)))


def test_depthwise_fork_types() -> None:
    x = rand(2, 4, 7, 6)
    w = rand(4, 1, 3, 3, seed=13)
    b = rand(4, seed=14)
    want = naive_conv(x, w, b, 4, (2, 2), (1, 1), (1, 1))
    # DepthwiseConvolution is a BaseConvolutionLayer: group is read from the params
    (got,) = forward("DepthwiseConvolution", x, w, b, **conv(num_output=4, group=4, kernel_size=[3], pad=[1],
                                                              stride=[2]))
    close(got, want)
    # ConvolutionDepthwise (conv_dw_layer.cpp) ignores group and num_output: always one filter per channel
    (got,) = forward("ConvolutionDepthwise", x, w, b, **conv(kernel_size=[3], pad=[1], stride=[2]))
    close(got, want)
    (got,) = forward("ConvolutionDepthwise", x, w, **conv(num_output=4, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1,
                                                          stride_h=2, stride_w=2, bias_term=False))
    close(got, naive_conv(x, w, None, 4, (2, 2), (1, 1), (1, 1)))


def test_depthwise_convolution_without_group_is_a_plain_convolution() -> None:
    x = rand(1, 3, 5, 5)
    w = rand(2, 3, 3, 3, seed=15)
    b = rand(2, seed=16)
    (got,) = forward("DepthwiseConvolution", x, w, b, **conv(num_output=2, kernel_size=[3]))
    close(got, naive_conv(x, w, b, 1, (1, 1), (0, 0), (1, 1)))


@pytest.mark.parametrize("budget", [64, 4 * 2 * 9 * 6 * 3, 1 << 20])
def test_convolution_and_deconvolution_split_big_buffers(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    # a tiny column budget splits a sample's output rows (64 bytes: one row at a time; 1296: 3 rows of 6),
    # a large one takes several samples at once; the result must not change
    monkeypatch.setattr(convolution, "COLUMN_BYTES", budget)
    x = rand(3, 2, 7, 6, seed=17)
    w, b = rand(4, 2, 3, 3, seed=18), rand(4, seed=19)
    (got,) = forward("Convolution", x, w, b, **conv(num_output=4, kernel_size=[3], pad=[1], dilation=[1, 2]))
    close(got, naive_conv(x, w, b, 1, (1, 1), (1, 1), (1, 2)))
    wd = rand(2, 3, 3, 3, seed=23)
    (got,) = forward("Deconvolution", x, wd, **conv(num_output=3, kernel_size=[3], stride=[2], bias_term=False))
    close(got, naive_deconv(x, wd, None, 1, (2, 2), (0, 0), (1, 1)))


def test_convolution_does_not_modify_its_bottom() -> None:
    x = rand(1, 2, 5, 5)
    keep = x.copy()
    forward("Convolution", x, rand(2, 2, 3, 3), rand(2), **conv(num_output=2, kernel_size=[3], pad=[1]))
    np.testing.assert_array_equal(x, keep)


# ----------------------------------------------------------------------------- deconvolution


@pytest.mark.parametrize(
    ("shape", "out", "params", "group", "bias"),
    [
        ((2, 4, 5, 6), 6, {"kernel_size": [4], "stride": [2], "pad": [1], "group": 2}, 2, True),  # stride 2 + crop
        ((1, 3, 4, 5), 2, {"kernel_size": [3]}, 1, True),
        ((1, 2, 3, 4), 3, {"kernel_size": [3, 2], "stride": [2, 3], "pad": [1, 0], "dilation": [2]}, 1, False),
        ((1, 2, 5, 4), 2, {"kernel_h": 2, "kernel_w": 5, "stride_h": 1, "stride_w": 2, "pad_h": 0, "pad_w": 2}, 1,
         True),
        ((1, 6, 3, 3), 6, {"kernel_size": [3], "stride": [2], "group": 6}, 6, True),  # depthwise deconvolution
        ((1, 4, 3, 3), 2, {"kernel_size": [1]}, 1, True),  # 1x1
    ],
)
def test_deconvolution_matches_naive_scatter(shape: tuple[int, ...], out: int, params: dict[str, Any], group: int,
                                             bias: bool) -> None:
    kernel = params.get("kernel_size", [params.get("kernel_h"), params.get("kernel_w")])
    kernel = kernel * 2 if len(kernel) == 1 else kernel
    x = rand(*shape, seed=20)
    w = rand(shape[1], out // group, *kernel, seed=21)
    b = rand(out, seed=22) if bias else None
    blobs = [w] if b is None else [w, b]
    (got,) = forward("Deconvolution", x, *blobs, **conv(num_output=out, bias_term=bias, **params))

    def axes(key: str, default: int) -> tuple[int, int]:
        if f"{key}_h" in params:
            return params[f"{key}_h"], params[f"{key}_w"]
        values = params.get(key, [default])
        return (values[0], values[-1])

    close(got, naive_deconv(x, w, b, group, axes("stride", 1), axes("pad", 0), axes("dilation", 1)))


# ----------------------------------------------------------------------------- real Caffe outputs


@pytest.mark.parametrize(("name", "input_file"), [("layer_convolution", "blob.npy"),
                                                  ("layer_deconvolution", "layer_deconvolution.input.npy")])
def test_opencv_layer_models_reproduce_caffe(name: str, input_file: str) -> None:
    folder = models_dir() / "opencv-dnn-layers"
    net = caffeport.read(folder / f"{name}.caffemodel", folder / f"{name}.prototxt")
    got = caffeport.run(net, {"input": np.load(folder / input_file)})["output"]
    close(got, np.load(folder / f"{name}.npy"))


def test_v1_lenet_convolutions_and_pooling_match_caffe() -> None:
    # a_lenet_v1 holds a_lenet's weights in the V1 format (legacy 4-D bias dims); Caffe's outputs are a_lenet's
    ref = models_dir() / "caffe-reference"
    net = caffeport.read(ref / "a_lenet_v1" / "a_lenet_v1.caffemodel", ref / "a_lenet_v1" / "deploy_v1.prototxt")
    out = caffeport.run(net, {"data": np.load(ref / "a_lenet" / "input.npy")}, all_layers=True)
    with np.load(ref / "a_lenet" / "outputs_per_layer.npz") as want:
        for key in ("conv1/conv1", "pool1/pool1", "conv2/conv2", "pool2/pool2"):
            close(out[key], want[key.replace("/", "__")])


def test_grouped_and_depthwise_reference_model() -> None:
    ref = models_dir() / "caffe-reference" / "d_grouped"
    net = caffeport.read(ref / "d_grouped.caffemodel", ref / "deploy.prototxt")
    out = caffeport.run(net, {"data": np.load(ref / "input.npy")}, all_layers=True)
    with np.load(ref / "outputs_per_layer.npz") as want:
        close(out["conv_g2/conv_g2"], want["conv_g2__conv_g2"])
        close(out["conv_dw/conv_dw"], want["conv_dw__conv_dw"])


def test_hyperlpr_fp16_non_square_convolutions_match_torch() -> None:
    torch = pytest.importorskip("torch")
    folder = models_dir() / "hyperlpr-segfree-fp16"
    net = caffeport.read(folder / "SegmenationFree-Inception.caffemodel", folder / "SegmenationFree-Inception.prototxt")
    (name, shape), = net.inputs.items()
    x = rng(5).uniform(-1, 1, size=(1, *shape[1:])).astype(np.float32)
    out = caffeport.run(net, {name: x}, all_layers=True)
    blobs = {name: x}
    kernels = set()
    checked = 0
    for layer in net.layers:
        if layer.type == "Convolution":
            p = layer.param("convolution_param")
            bottom = blobs[layer.bottoms[0]]
            w = torch.from_numpy(np.asarray(layer.blobs[0], np.float32))
            b = torch.from_numpy(np.asarray(layer.blobs[1], np.float32).reshape(-1)) if len(layer.blobs) > 1 else None
            want = torch.nn.functional.conv2d(
                torch.from_numpy(bottom).double(), w.double(), None if b is None else b.double(),
                stride=(p.get("stride_h", 1), p.get("stride_w", 1)), padding=(p.get("pad_h", 0), p.get("pad_w", 0)),
                groups=p.get("group", 1)).numpy()
            close(out[f"{layer.name}/{layer.tops[0]}"], want)
            kernels.add(tuple(w.shape[2:]))
            checked += 1
        for top in layer.tops:
            blobs[top] = out[f"{layer.name}/{top}"]
    assert checked >= 10
    assert {(1, 5), (7, 1)} <= kernels


def test_ultraface_depthwise_convolutions_match_opencv() -> None:
    # 52 convolutions, 18 of them depthwise (group = channels 16 ... 256), against OpenCV 4's Caffe runtime
    cv2 = pytest.importorskip("cv2")
    folder = models_dir() / "ultraface-rfb320"
    net = caffeport.read(folder / "RFB-320.caffemodel", folder / "RFB-320.prototxt")
    (name, shape), = net.inputs.items()
    x = rng(6).uniform(-1, 1, size=(1, *shape[1:])).astype(np.float32)
    out = caffeport.run(net, {name: x}, all_layers=True)
    convs = [layer for layer in net.layers if layer.type == "Convolution"]
    reference = cv2.dnn.readNetFromCaffe(str(folder / "RFB-320.prototxt"), str(folder / "RFB-320.caffemodel"))
    reference.setInput(x)
    for layer, want in zip(convs, reference.forward([layer.name for layer in convs]), strict=True):
        close(out[f"{layer.name}/{layer.tops[0]}"], want)
    assert sum(layer.param("convolution_param").get("group", 1) > 1 for layer in convs) >= 10


# ----------------------------------------------------------------------------- pooling


POOL_CASES = [
    # (shape, kernel, stride, pad, floor)
    ((1, 2, 7, 7), (3, 3), (2, 2), (0, 0), False),  # 7 -> 3, windows fit
    ((1, 2, 7, 7), (2, 2), (2, 2), (1, 1), False),  # 7 + pad 1: ceil 5, the last starts in the pad -> 4
    ((2, 1, 9, 9), (3, 3), (2, 2), (0, 0), False),  # 9 -> 4
    ((1, 1, 22, 22), (3, 3), (2, 2), (0, 0), False),  # 22 -> 11, the last window clipped to 2 rows
    ((1, 1, 6, 6), (3, 3), (2, 2), (0, 0), False),  # 6 -> 3 (ceil), last window partial
    ((1, 1, 6, 6), (3, 3), (2, 2), (0, 0), True),  # FLOOR: 6 -> 2
    ((1, 2, 7, 7), (2, 2), (2, 2), (0, 0), True),  # FLOOR: 7 -> 3 (ceil would give 4)
    ((1, 2, 5, 8), (3, 2), (2, 1), (1, 0), False),  # kernel_h/w, stride_h/w, pad_h/w
    ((1, 1, 5, 5), (1, 3), (3, 3), (0, 1), False),  # pad only along w still drops along h
    ((1, 2, 8, 8), (3, 3), (1, 1), (1, 1), False),  # 3x3/1 pad 1 keeps the size; all borders partial
    ((1, 1, 5, 5), (1, 1), (3, 3), (0, 0), False),  # stride > kernel, no pad: the last window lies past the image
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(("shape", "kernel", "stride", "pad", "floor"), POOL_CASES)
def test_pooling_matches_caffe_loops(method: str, shape: tuple[int, ...], kernel: tuple[int, int],
                                     stride: tuple[int, int], pad: tuple[int, int], floor: bool) -> None:
    x = rand(*shape, seed=30)
    params = {"pool": method, "kernel_h": kernel[0], "kernel_w": kernel[1], "stride_h": stride[0],
              "stride_w": stride[1], "pad_h": pad[0], "pad_w": pad[1], "round_mode": "FLOOR" if floor else "CEIL"}
    keep = x.copy()
    want, want_mask = naive_pool(x, method, kernel, stride, pad, floor)
    if method == "MAX":
        got, mask = forward("Pooling", x, n_tops=2, **pool(**params))
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_array_equal(got, want)
        (alone,) = forward("Pooling", x, **pool(**params))  # the one-top path skips the mask
        np.testing.assert_array_equal(alone, want)
    else:
        (got,) = forward("Pooling", x, **pool(**params))
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(x, keep)


def test_ave_pooling_divisor_counts_padding_but_not_past_it() -> None:
    # 4x4 ones, k3 s2 pad 1: out ceil((4 + 2 - 3)/2) + 1 = 3; (3-1)*2 = 4 < 4 + 1 keeps it
    # rows: window 0 spans [-1, 2) -> 3 cells (1 of them padding); window 2 spans [3, 6) clipped to H + pad = 5 -> 2
    (got,) = forward("Pooling", np.ones((1, 1, 4, 4), np.float32), **pool(pool="AVE", kernel_size=3, stride=2, pad=1))
    # sums of the clipped windows over the image: rows [0,2) [1,4) [3,4) -> 2, 3, 1 image rows
    rows, sizes = np.array([2, 3, 1]), np.array([3, 3, 2])
    np.testing.assert_allclose(got[0, 0], np.outer(rows, rows) / np.outer(sizes, sizes), rtol=1e-6)


def test_pooling_window_past_the_image_gives_caffes_values() -> None:
    # H = W = 5, k1 s3, no pad: ceil(4/3) + 1 = 3 windows starting at 0, 3, 6; the one at 6 reads nothing
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    top, mask = forward("Pooling", x, n_tops=2, **pool(pool="MAX", kernel_size=1, stride=3))
    assert top[0, 0, 2, 0] == -FLT_MAX and mask[0, 0, 2, 0] == -1
    assert top[0, 0, 1, 1] == 18 and mask[0, 0, 1, 1] == 18
    (ave,) = forward("Pooling", x, **pool(pool="AVE", kernel_size=1, stride=3))
    # divisor (min(6 + 1, 5) - 6) * 1 = -1 on the last row: 0 / -1 = -0; both axes past: (-1)(-1) = 1 -> 0
    assert ave[0, 0, 2, 0] == 0 and np.signbit(ave[0, 0, 2, 0])
    assert ave[0, 0, 2, 2] == 0 and not np.signbit(ave[0, 0, 2, 2])


def test_max_pooling_ties_nan_and_minus_infinity_as_caffe() -> None:
    x = np.array([[[[1, 1, 0, np.nan], [1, 0, np.nan, np.nan], [-np.inf, -np.inf, 2, 2], [-np.inf, -np.inf, 2, 2]]]],
                 np.float32)
    top, mask = forward("Pooling", x, n_tops=2, **pool(pool="MAX", kernel_size=2, stride=2))
    # ties keep the first in row-major order; NaN is never taken; nothing beats -FLT_MAX in an all -inf window
    np.testing.assert_array_equal(top[0, 0], [[1, 0], [-FLT_MAX, 2]])
    np.testing.assert_array_equal(mask[0, 0], [[0, 2], [-1, 10]])
    (alone,) = forward("Pooling", x, **pool(pool="MAX", kernel_size=2, stride=2))
    np.testing.assert_array_equal(alone, top)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method: str) -> None:
    x = rand(2, 3, 5, 7, seed=31)
    x[0, 1, 3, 2] = 50.0  # a known argmax
    x[1, 2] = np.nan  # MAX: nothing beats -FLT_MAX
    want, want_mask = naive_pool(x, method, (5, 7), (1, 1), (0, 0))
    if method == "MAX":
        got, mask = forward("Pooling", x, n_tops=2, **pool(pool=method, global_pooling=True))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(mask, want_mask)
        assert mask[0, 1, 0, 0] == 3 * 7 + 2 and got[1, 2, 0, 0] == -FLT_MAX and mask[1, 2, 0, 0] == -1
        (alone,) = forward("Pooling", x, **pool(pool=method, global_pooling=True))
        np.testing.assert_array_equal(alone, want)
    else:
        (got,) = forward("Pooling", x, **pool(pool=method, global_pooling=True))
        np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)


def test_pooling_enum_numbers_and_refusals() -> None:
    x = rand(1, 1, 6, 6, seed=32)
    (got,) = forward("Pooling", x, **pool(pool=1, kernel_size=2, stride=2))  # AVE by enum number
    np.testing.assert_allclose(got, naive_pool(x, "AVE", (2, 2), (2, 2), (0, 0))[0], rtol=1e-6)
    with pytest.raises(UnsupportedModelError, match="STOCHASTIC"):
        forward("Pooling", x, **pool(pool="STOCHASTIC", kernel_size=2, stride=2))
    with pytest.raises(ShapeInferenceError, match="only MAX"):
        forward("Pooling", x, n_tops=2, **pool(pool="AVE", kernel_size=2, stride=2))


# ----------------------------------------------------------------------------- SPP


def naive_spp(x: np.ndarray, method: str, height: int) -> np.ndarray:
    """spp_layer.cpp: level l pools with kernel ceil(H / 2^l), stride = kernel, pad (kernel * 2^l - H + 1) / 2."""
    n, _, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2**level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        top, _ = naive_pool(x, method, (kh, kw), (kh, kw), (ph, pw))
        parts.append(top)
    if height == 1:
        return parts[0]
    return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(("shape", "height"), [((2, 3, 7, 9), 3), ((1, 2, 13, 6), 2), ((1, 2, 16, 16), 4),
                                               ((2, 3, 5, 4), 1)])
def test_spp_matches_its_pooling_levels(method: str, shape: tuple[int, ...], height: int) -> None:
    x = rand(*shape, seed=40)
    (got,) = forward("SPP", x, spp_param={"pyramid_height": height, "pool": method})
    want = naive_spp(x, method, height)
    if height > 1:
        assert got.shape == (shape[0], shape[1] * sum(4**level for level in range(height)))
    else:
        assert got.shape == (shape[0], shape[1], 1, 1)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_spp_refusals() -> None:
    # H = 3, level 2 (4 bins): kernel 1, pad (4 - 3 + 1) // 2 = 1, and Caffe's Pooling CHECKs pad < kernel
    with pytest.raises(ShapeInferenceError, match="pad 1 must be smaller"):
        forward("SPP", rand(1, 1, 3, 8), spp_param={"pyramid_height": 3, "pool": "MAX"})
    with pytest.raises(ShapeInferenceError, match="pyramid_height"):
        forward("SPP", rand(1, 1, 8, 8), spp_param={"pool": "MAX"})
    with pytest.raises(UnsupportedModelError, match="STOCHASTIC"):
        forward("SPP", rand(1, 1, 8, 8), spp_param={"pyramid_height": 2, "pool": "STOCHASTIC"})
