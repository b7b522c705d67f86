"""Each pass against Caffe's semantics computed in numpy, on real weights where a model has them.

The end-to-end proof (Keras and PyTorch reproducing Caffe's own outputs) is in
tests/proof; these tests pin each pass's arithmetic and its edge cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.transforms import Options, transform
from tests.conftest import models_dir


def _ref(name: str, prototxt: bool = True) -> Net:
    folder = models_dir() / "caffe-reference" / name
    return caffeport.read(folder / f"{name}.caffemodel", folder / "deploy.prototxt" if prototxt else None)


def test_transform_leaves_the_read_net_untouched() -> None:
    net = _ref("b_resnet_block")
    before = {la.name: [b.copy() for b in la.blobs] for la in net}
    out = transform(net, "tensorflow")
    assert out is not net
    for layer in net:
        assert len(layer.blobs) == len(before[layer.name])
        for a, b in zip(layer.blobs, before[layer.name]):
            np.testing.assert_array_equal(a, b)
    assert net.report == [] and out.report


def test_batchnorm_factor_is_caffes_reciprocal_product() -> None:
    """Caffe multiplies by 1/s in float32 (batch_norm_layer.cpp); s = 123.4 and 0.75 in this model."""
    net = _ref("b_resnet_block")
    out = transform(net, "torch")
    for name in ("bn_conv0", "bn_res1_a"):
        mean, var, s = (np.asarray(b, dtype=np.float32) for b in net.layer(name).blobs)
        factor = np.float32(1) / s.reshape(-1)[0]
        layer = out.layer(name)
        np.testing.assert_array_equal(layer.blobs[layer.weight_names.index("running_mean")], mean * factor)
        np.testing.assert_array_equal(layer.blobs[layer.weight_names.index("running_var")], var * factor)
    assert out.conversion.batchnorm_eps["bn_res1_b"] == pytest.approx(1e-3)
    assert out.conversion.batchnorm_eps["bn_conv0"] == pytest.approx(1e-5)


def _bn_net(factor: float, with_scale: bool, scale_in_place: bool = True, extra_reader: bool = False) -> Net:
    c = 3
    rng = np.random.default_rng(0)
    layers = [
        Layer("bn", "BatchNorm", ["x"], ["x"], blobs=[rng.random(c, dtype=np.float32),
                                                     rng.random(c, dtype=np.float32) + 1,
                                                     np.array([factor], np.float32)]),
    ]
    if extra_reader:
        layers.append(Layer("peek", "ReLU", ["x"], ["peek"]))
    if with_scale:
        top = "x" if scale_in_place else "y"
        layers.append(Layer("sc", "Scale", ["x"], [top], params={"scale_param": {"bias_term": True}},
                            blobs=[np.full(c, 2, np.float32), np.full(c, 0.5, np.float32)]))
        if not scale_in_place:
            layers.append(Layer("after", "ReLU", ["x"], ["z"]))
    return Net(name="bn", layers=layers)


def test_zero_scale_factor_gives_zeros() -> None:
    out = transform(_bn_net(0.0, with_scale=False), "tensorflow")
    layer = out.layer("bn")
    assert layer.weight_names == ["moving_mean", "moving_variance"]
    assert all(not b.any() for b in layer.blobs)


def test_fusion_order_and_refusal() -> None:
    fused = transform(_bn_net(2.0, with_scale=True), "tensorflow").layer("bn")
    assert fused.weight_names == ["gamma", "beta", "moving_mean", "moving_variance"]
    np.testing.assert_array_equal(fused.blobs[0], np.full(3, 2, np.float32))
    # the BatchNorm output is read by another layer before the Scale: fusing would change what it sees
    out = transform(_bn_net(2.0, with_scale=True, extra_reader=True), "tensorflow")
    assert out.layer("bn").weight_names == ["moving_mean", "moving_variance"]
    assert out.layer("sc").weight_names == ["scale", "bias"]
    # a Scale writing a new blob while the un-scaled one is read later: not fused either
    out = transform(_bn_net(2.0, with_scale=True, scale_in_place=False), "tensorflow")
    assert out.layer("sc").weight_names == ["scale", "bias"]


def _conv2d_caffe(x: np.ndarray, w: np.ndarray, group: int) -> np.ndarray:
    """Caffe's grouped cross-correlation, stride 1, no pad: x (C, H, W), w (O, C/g, kh, kw)."""
    _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    out = np.zeros((o, h - kh + 1, wd - kw + 1), np.float64)
    opg = o // group
    for oc in range(o):
        g = oc // opg
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                out[oc, i, j] = np.sum(x[g * cg:(g + 1) * cg, i:i + kh, j:j + kw] * w[oc])
    return out


def _conv2d_hwio(x_hwc: np.ndarray, k: np.ndarray, group: int) -> np.ndarray:
    """Keras Conv2D(groups=g) semantics on HWC with an HWIO kernel."""
    h, wd, _ = x_hwc.shape
    kh, kw, cg, o = k.shape
    opg = o // group
    out = np.zeros((h - kh + 1, wd - kw + 1, o), np.float64)
    for oc in range(o):
        g = oc // opg
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j, oc] = np.sum(x_hwc[i:i + kh, j:j + kw, g * cg:(g + 1) * cg] * k[:, :, :, oc])
    return out


def test_grouped_and_depthwise_kernels_compute_caffes_convolution() -> None:
    net = _ref("d_grouped")
    x = np.random.default_rng(1).standard_normal((8, 6, 6))
    for options, name in ((Options(), "conv_g2"), (Options(depthwise="grouped"), "conv_dw")):
        out = transform(net, "tensorflow", options).layer(name)
        group = net.layer(name).params["convolution_param"]["group"]
        w = np.asarray(net.layer(name).blobs[0], np.float64)
        xin = x[: w.shape[1] * group]
        assert out.framework_class == "Conv2D"
        np.testing.assert_allclose(_conv2d_hwio(xin.transpose(1, 2, 0), out.blobs[0], group),
                                   _conv2d_caffe(xin, w, group).transpose(1, 2, 0), rtol=1e-6, atol=1e-9)
    dw = transform(net, "tensorflow").layer("conv_dw")
    assert dw.framework_class == "DepthwiseConv2D" and dw.weight_names == ["depthwise_kernel", "bias"]
    w = np.asarray(net.layer("conv_dw").blobs[0])
    c = net.layer("conv_dw").params["convolution_param"]["group"]
    m = w.shape[0] // c
    for ch in range(c):  # depthwise kernel (kh, kw, C, m)[..., ch, k] is Caffe's output channel ch*m + k
        for k in range(m):
            np.testing.assert_array_equal(dw.blobs[0][:, :, ch, k], w[ch * m + k, 0])


def test_flatten_reorder_matches_caffes_inner_product_on_real_lenet() -> None:
    net = _ref("a_lenet")
    out = transform(net, "tensorflow").layer("ip1")
    w, b = (np.asarray(x, np.float64) for x in net.layer("ip1").blobs)
    x = np.random.default_rng(2).standard_normal((50, 4, 4))  # pool2's output (C, H, W)
    caffe = w @ x.reshape(-1) + b
    keras = x.transpose(1, 2, 0).reshape(-1) @ out.blobs[0] + out.blobs[1]
    np.testing.assert_allclose(keras, caffe, rtol=1e-5)
    assert any(e.action == "flatten-reorder" and e.layer == "ip1" for e in transform(net, "tensorflow").report)
    # channels_first keeps Caffe's order: plain transpose
    plain = transform(net, "channels_first").layer("ip1")
    np.testing.assert_array_equal(plain.blobs[0], w.T.astype(np.float32))


def test_flatten_reorder_through_an_explicit_flatten_layer(tmp_path: Path) -> None:
    folder = models_dir() / "caffe-reference" / "a_lenet"
    text = (folder / "deploy.prototxt").read_text()
    old = 'layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"'
    assert old in text, "the prototxt edit must apply"
    text = text.replace(old, 'layer { name: "flatten" type: "Flatten" bottom: "pool2" top: "flat" }\n'
                        'layer { name: "ip1" type: "InnerProduct" bottom: "flat" top: "ip1"')
    proto = tmp_path / "flat.prototxt"
    proto.write_text(text)
    net = caffeport.read(folder / "a_lenet.caffemodel", proto)
    assert net.layer("ip1").bottom_shapes == [(2, 800)]
    out = transform(net, "tensorflow")
    assert any(e.action == "flatten-reorder" and e.layer == "ip1" for e in out.report)


def test_unknown_shape_converts_plainly_and_warns() -> None:
    params = {"inner_product_param": {"num_output": 2, "bias_term": False}}
    layer = Layer("fc", "InnerProduct", ["x"], ["y"], params=params,
                  blobs=[np.ones((2, 12), np.float32)], bottom_shapes=[None])
    out = transform(Net(layers=[layer]), "tensorflow")
    assert out.layer("fc").blobs[0].shape == (12, 2)
    assert any("input shape unknown" in w for w in out.warnings)


def _deconv_caffe(x: np.ndarray, w: np.ndarray, group: int, stride: int) -> np.ndarray:
    """Caffe Deconvolution (no pad): scatter each input pixel times the kernel. w (in, out/g, kh, kw)."""
    cin, h, wd = x.shape
    _, opg, kh, kw = w.shape
    ipg = cin // group
    out = np.zeros((opg * group, (h - 1) * stride + kh, (wd - 1) * stride + kw))
    for ci in range(cin):
        g = ci // ipg
        for i in range(h):
            for j in range(wd):
                rows, cols = slice(i * stride, i * stride + kh), slice(j * stride, j * stride + kw)
                out[g * opg:(g + 1) * opg, rows, cols] += x[ci, i, j] * w[ci]
    return out


def test_grouped_deconvolution_expands_to_an_equivalent_full_kernel() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)  # in 6, out 4 (2 per group), group 2
    layer = Layer("up", "Deconvolution", ["x"], ["y"], blobs=[w],
                  params={"convolution_param": {"num_output": 4, "group": 2, "bias_term": False,
                                                "kernel_size": [3], "stride": [2]}})
    out = transform(Net(layers=[layer]), "tensorflow")
    kernel = out.layer("up").blobs[0]
    assert kernel.shape == (3, 3, 4, 6)
    full = kernel.transpose(3, 2, 0, 1)  # back to (in, out, kh, kw), ungrouped
    x = rng.standard_normal((6, 4, 4))
    np.testing.assert_allclose(_deconv_caffe(x, full, 1, 2), _deconv_caffe(x, w.astype(np.float64), 2, 2),
                               rtol=1e-6, atol=1e-9)
    assert any("grouped Deconvolution" in w for w in out.warnings)


def _true_convolution(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A 'valid', stride-1 true convolution, as Theano's ``conv2d`` computes it (NCHW input, Keras-layout kernel).

    Written from the definition, independently of caffeport: the kernel index runs against the input index,
    ``y[n, o, r, s] = sum_{c, i, j} x[n, c, r + kh - 1 - i, s + kw - 1 - j] * k[i, j, c, o]``, one explicit
    loop over the kernel taps.
    """
    kh, kw, _, _ = kernel.shape
    rows, cols = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    y = np.zeros((x.shape[0], kernel.shape[3], rows, cols))
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, kh - 1 - i : kh - 1 - i + rows, kw - 1 - j : kw - 1 - j + cols].astype(np.float64)
            y += np.einsum("nchw,co->nohw", window, kernel[i, j].astype(np.float64))
    return y + bias.astype(np.float64)[None, :, None, None]


def test_theano_kernels_as_a_true_convolution_reproduce_caffes_convolution() -> None:
    """Theano convolves where Caffe cross-correlates: the theano backend's conv1 of a_lenet, applied as a true
    convolution, gives Caffe's own recorded conv1 output and caffeport.run's; the tensorflow kernel does not."""
    net = _ref("a_lenet")
    folder = models_dir() / "caffe-reference" / "a_lenet"
    x = np.load(folder / "input.npy")
    with np.load(folder / "outputs_per_layer.npz") as z:
        caffe = z["conv1__conv1"]
    ours = caffeport.run(net, {"data": x}, all_layers=True)["conv1/conv1"]
    theano = transform(net, "theano").layer("conv1")
    kernel, bias = (np.asarray(b) for b in theano.blobs)
    assert kernel.shape == (5, 5, 1, 20)
    got = _true_convolution(x, kernel, bias)
    np.testing.assert_allclose(got, caffe, rtol=0, atol=1e-5 * np.abs(caffe).max())
    np.testing.assert_allclose(got, ours, rtol=0, atol=1e-5 * np.abs(ours).max())
    keras = transform(net, "tensorflow").layer("conv1")  # cross-correlation kernels: wrong under convolution
    unflipped = _true_convolution(x, np.asarray(keras.blobs[0]), np.asarray(keras.blobs[1]))
    assert np.abs(unflipped - caffe).max() > 0.1 * np.abs(caffe).max()


def _lstm_caffe_step(x: np.ndarray, h: np.ndarray, c: np.ndarray, w_x: np.ndarray, b: np.ndarray,
                     w_h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Caffe's LSTM unit: gates i, f, o, g blocks of W_xc x + b + W_hc h."""
    z = w_x @ x + b + w_h @ h
    hidden = h.size
    i, f, o, g = (z[k * hidden:(k + 1) * hidden] for k in range(4))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def test_lstm_gate_reorder_gives_the_same_step_in_keras_and_torch_order() -> None:
    net = _ref("e_recurrent")
    w_x, b, w_h = (np.asarray(x, np.float64) for x in net.layer("lstm").blobs)
    rng = np.random.default_rng(4)
    x, h, c = rng.standard_normal(w_x.shape[1]), rng.standard_normal(w_h.shape[1]), rng.standard_normal(16)
    want_h, want_c = _lstm_caffe_step(x, h, c, w_x, b, w_h)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    keras = transform(net, "tensorflow").layer("lstm")
    z = x @ keras.blobs[0] + h @ keras.blobs[1] + keras.blobs[2]
    i, f, g, o = np.split(z, 4)  # Keras: i, f, c, o
    kc = sig(f) * c + sig(i) * np.tanh(g)
    np.testing.assert_allclose(sig(o) * np.tanh(kc), want_h, rtol=1e-5)
    torch_layer = transform(net, "torch").layer("lstm")
    wih, whh, bih, bhh = torch_layer.blobs
    z = wih @ x + whh @ h + bih + bhh
    i, f, g, o = np.split(z, 4)  # PyTorch: i, f, g, o
    tc = sig(f) * c + sig(i) * np.tanh(g)
    np.testing.assert_allclose(tc, want_c, rtol=1e-5)
    assert torch_layer.weight_names == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] and not bhh.any()


def test_embed_bias_becomes_its_own_layer() -> None:
    out = transform(_ref("e_recurrent"), "tensorflow")
    assert out.layer("embed").weight_names == ["embeddings"]
    bias = out.layer("embed_bias")
    assert bias.weight_names == ["bias"] and bias.blobs[0].shape == (8,)
    assert any(e.action == "split" and e.layer == "embed" for e in out.report)


def test_prelu_alpha_shapes() -> None:
    out = transform(_ref("c_deconv_prelu"), "tensorflow")
    assert out.layer("prelu1").blobs[0].shape == (1, 1, 8)
    assert out.layer("prelu2").blobs[0].shape == (1, 1, 1)  # channel_shared, stored as a 0-d blob
    first = transform(_ref("c_deconv_prelu"), "channels_first")
    assert first.layer("prelu1").blobs[0].shape == (8, 1, 1)


def test_names_are_sanitised_and_collisions_refused() -> None:
    blob = [np.ones((2, 2), np.float32)]
    ip = {"inner_product_param": {"num_output": 2, "bias_term": False}}
    net = Net(layers=[Layer("inception_3a/1x1", "InnerProduct", ["x"], ["y"], params=ip, blobs=blob,
                            bottom_shapes=[(1, 2)])])
    out = transform(net, "tensorflow")
    assert out.layers[0].name == "inception_3a_1x1"
    assert out.conversion.name_map == {"inception_3a/1x1": "inception_3a_1x1"}
    clash = Net(layers=[*net.layers, Layer("inception_3a 1x1", "InnerProduct", ["x"], ["z"], params=ip,
                                            blobs=blob, bottom_shapes=[(1, 2)])])
    with pytest.raises(ModelStructureError, match="both become 'inception_3a_1x1'"):
        transform(clash, "tensorflow")


def test_unknown_types_pass_through_or_are_skipped() -> None:
    net = caffeport.read(models_dir() / "yunet-libfacedetection" / "yufacedetectnet-open-v1.caffemodel")
    normalize = next(la for la in net if la.type == "Normalize")
    out = transform(net, "tensorflow")
    np.testing.assert_array_equal(out.layer(normalize.name).blobs[0], normalize.blobs[0])
    assert any(e.action == "unknown-passed-through" and e.layer == normalize.name for e in out.report)
    skipped = transform(net, "tensorflow", Options(skip_unknown=True))
    assert skipped.layer(normalize.name).blobs == []


def test_unknown_backend_is_a_clear_error() -> None:
    with pytest.raises(CaffeportError, match="unknown backend 'jax'"):
        transform(_ref("a_lenet"), "jax")


def test_register_a_backend() -> None:
    from caffeport.transforms import BACKENDS, register_backend

    register_backend("test_raw_names", ["sanitize_names"], replace=True)
    try:
        out = transform(_ref("a_lenet"), "test_raw_names")
        assert out.layer("ip1").blobs[0].shape == (500, 800)  # no layout pass: Caffe's own
    finally:
        del BACKENDS["test_raw_names"]


def test_torch_names_have_no_dots() -> None:
    """PyTorch refuses module names with '.', which would also split state_dict keys."""
    blob = [np.ones((2, 2), np.float32)]
    ip = {"inner_product_param": {"num_output": 2, "bias_term": False}}
    net = Net(layers=[Layer("conv1.1", "InnerProduct", ["x"], ["y"], params=ip, blobs=blob, bottom_shapes=[(1, 2)])])
    assert transform(net, "torch").layers[0].name == "conv1_1"
    assert transform(net, "tensorflow").layers[0].name == "conv1.1"  # Keras and HDF5 accept it


def test_register_backend_refuses_an_order_that_breaks_a_pass() -> None:
    """flatten_channels_last reorders Dense kernels, which keras_layout makes: before it, it would see none."""
    from caffeport.transforms import register_backend

    with pytest.raises(ValueError, match=r"'flatten_channels_last' .* requires keras_layout"):
        register_backend("broken", ["batchnorm_scale_factor", "fuse_batchnorm_scale", "lstm_gate_order",
                                    "channels_last", "flatten_channels_last", "keras_layout"])
    with pytest.raises(ValueError, match=r"'keras_layout' .* requires data_format.*channels_first, channels_last"):
        register_backend("broken", ["batchnorm_scale_factor", "fuse_batchnorm_scale", "lstm_gate_order",
                                    "keras_layout"])
    assert "broken" not in caffeport.transforms.BACKENDS


def test_unknown_shape_warning_names_the_layer_that_made_it_unknown(tmp_path: Path) -> None:
    """A type without a shape rule between the convolutions and the first InnerProduct: say which, not 'pass the
    deploy prototxt' (it was passed)."""
    folder = models_dir() / "caffe-reference" / "a_lenet"
    text = (folder / "deploy.prototxt").read_text()
    old = 'layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"'
    assert old in text, "the prototxt edit must apply"
    text = text.replace(old, 'layer { name: "mystery" type: "MyPythonLayer" bottom: "pool2" top: "odd" }\n'
                        'layer { name: "ip1" type: "InnerProduct" bottom: "odd" top: "ip1"')
    proto = tmp_path / "odd.prototxt"
    proto.write_text(text)
    out = transform(caffeport.read(folder / "a_lenet.caffemodel", proto), "tensorflow")
    [warning] = [w for w in out.warnings if "'ip1'" in w]
    assert "layer 'mystery' is of type 'MyPythonLayer', which has no shape rule" in warning
    assert "NOT reordered" in warning and "pass the deploy prototxt" not in warning
