"""Reference forwards of InnerProduct, Embed, LSTM, RNN, BatchNorm, Scale, Bias, PReLU, LRN, MVN and Softmax.

Every expected value comes from a deliberately naive float64 computation in
this file (explicit loops over output positions on tiny inputs, written from
the formulas of Caffe's ``*_layer.cpp``) or from numbers worked out by hand in
the comment next to them; none is taken from the code under test. Each layer
runs through `caffeport.run` on a one-layer net, so the blob checks and the
pre-flight of unsupported parameters are exercised too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, InputError
from caffeport.ir import Layer, Net
from caffeport.layers.shapes import infer_shapes

RTOL = 1e-5
ATOL = 1e-6


def run_layer(
    type_: str,
    bottoms: Sequence[np.ndarray],
    blobs: Sequence[Any] = (),
    n_tops: int = 1,
    **params: Any,
) -> list[np.ndarray]:
    """Run one layer of ``type_`` on ``bottoms`` (net inputs b0, b1, ...) and return its tops t0, t1, ..."""
    names = [f"b{i}" for i in range(len(bottoms))]
    tops = [f"t{i}" for i in range(n_tops)]
    layer = Layer(name="L", type=type_, bottoms=names, tops=tops, params=params,
                  blobs=[np.asarray(b, dtype=np.float32) for b in blobs])
    net = Net(name="t", layers=[layer], inputs={n: tuple(b.shape) for n, b in zip(names, bottoms, strict=True)})
    infer_shapes(net, strict=True)
    originals = [b.copy() for b in bottoms]
    out = caffeport.run(net, dict(zip(names, bottoms, strict=True)))
    for before, after in zip(originals, bottoms, strict=True):
        np.testing.assert_array_equal(before, after)  # bottoms are never modified in place
    for name, shape in zip(tops, layer.top_shapes, strict=True):
        assert out[name].dtype == np.float32
        assert shape is None or out[name].shape == shape, f"{name}: {out[name].shape} vs shape rule {shape}"
    return [out[name] for name in tops]


def close(got: np.ndarray, want: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ----------------------------------------------------------------------------- InnerProduct


def naive_inner_product(x: np.ndarray, w_nk: np.ndarray, b: np.ndarray | None, axis: int) -> np.ndarray:
    """y[outer..., o] = sum over the flattened (C-order) trailing axes of x * W[o, k] + b[o]."""
    outer, inner = x.shape[:axis], x.shape[axis:]
    n = w_nk.shape[0]
    y = np.zeros((*outer, n))
    for idx in np.ndindex(*outer):
        for o in range(n):
            total = 0.0
            for j, pos in enumerate(np.ndindex(*inner)):
                total += float(x[idx + pos]) * float(w_nk[o, j])
            y[(*idx, o)] = total + (float(b[o]) if b is not None else 0.0)
    return y


def test_inner_product_axis_1_with_bias() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, 2, 3, 2, 2), rand(rng, 4, 12), rand(rng, 4)
    (y,) = run_layer("InnerProduct", [x], [w, b], inner_product_param={"num_output": 4})
    close(y, naive_inner_product(x, w, b, 1))


def test_inner_product_axis_2_flattens_the_trailing_axes() -> None:
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, 2, 3, 4, 5), rand(rng, 6, 20), rand(rng, 6)
    (y,) = run_layer("InnerProduct", [x], [w, b], inner_product_param={"num_output": 6, "axis": 2})
    assert y.shape == (2, 3, 6)
    close(y, naive_inner_product(x, w, b, 2))


def test_inner_product_transpose_reads_the_weight_as_k_by_n() -> None:
    rng = np.random.default_rng(3)
    x, w_kn = rand(rng, 3, 2, 5), rand(rng, 5, 4)
    (y,) = run_layer("InnerProduct", [x], [w_kn], inner_product_param={
        "num_output": 4, "axis": -1, "transpose": True, "bias_term": False})
    close(y, naive_inner_product(x, w_kn.T, None, 2))


def test_inner_product_legacy_4d_blobs() -> None:
    rng = np.random.default_rng(4)
    x, w, b = rand(rng, 2, 6), rand(rng, 3, 6), rand(rng, 3)
    (y,) = run_layer("InnerProduct", [x], [w.reshape(1, 1, 3, 6), b.reshape(1, 1, 1, 3)],
                     inner_product_param={"num_output": 3})
    close(y, naive_inner_product(x, w, b, 1))


# ----------------------------------------------------------------------------- Embed


def test_embed_selects_rows_and_adds_the_bias() -> None:
    rng = np.random.default_rng(5)
    w, b = rand(rng, 7, 3), rand(rng, 3)
    x = np.array([[0, 6], [3, 3], [1, 5]], dtype=np.float32)
    (y,) = run_layer("Embed", [x], [w, b], embed_param={"input_dim": 7, "num_output": 3})
    want = np.zeros((3, 2, 3))
    for i, j in product(range(3), range(2)):
        want[i, j] = w[int(x[i, j])].astype(np.float64) + b
    close(y, want)


def test_embed_without_bias() -> None:
    w = np.arange(8, dtype=np.float32).reshape(4, 2)
    (y,) = run_layer("Embed", [np.array([2, 0], dtype=np.float32)], [w],
                     embed_param={"input_dim": 4, "num_output": 2, "bias_term": False})
    close(y, np.array([[4.0, 5.0], [0.0, 1.0]]))


@pytest.mark.parametrize("bad", [7.0, -1.0, 2.5, float("nan")])
def test_embed_index_outside_the_table_or_not_integral_is_an_error(bad: float) -> None:
    w, b = np.zeros((7, 3), np.float32), np.zeros(3, np.float32)
    x = np.array([[1.0, bad]], dtype=np.float32)
    with pytest.raises(InputError, match=r"not an integer in \[0, input_dim = 7\)") as info:
        run_layer("Embed", [x], [w, b], embed_param={"input_dim": 7, "num_output": 3})
    assert info.value.layer == "L"
    assert "[0, 1]" in info.value.message  # the position of the bad value


# ----------------------------------------------------------------------------- LSTM


def naive_lstm(
    x: np.ndarray,
    cont: np.ndarray,
    w_xc: np.ndarray,
    b_c: np.ndarray,
    w_hc: np.ndarray,
    static: np.ndarray | None = None,
    w_static: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Caffe's unrolled LSTM, one scalar at a time: gates i, f, o, g; h_{t-1} and f scaled by cont_t."""
    t_steps, n_streams = x.shape[:2]
    hid = w_hc.shape[1]
    xf = x.reshape(t_steps, n_streams, -1).astype(np.float64)
    h = np.zeros((n_streams, hid)) if h0 is None else h0.reshape(n_streams, hid).astype(np.float64)
    c = np.zeros((n_streams, hid)) if c0 is None else c0.reshape(n_streams, hid).astype(np.float64)
    out = np.zeros((t_steps, n_streams, hid))
    for t in range(t_steps):
        new_h, new_c = np.zeros_like(h), np.zeros_like(c)
        for n in range(n_streams):
            k = float(cont[t, n])
            gate = np.zeros(4 * hid)
            for j in range(4 * hid):
                total = float(b_c[j])
                total += sum(float(w_xc[j, i]) * xf[t, n, i] for i in range(xf.shape[2]))
                total += sum(float(w_hc[j, m]) * k * h[n, m] for m in range(hid))
                if static is not None and w_static is not None:
                    sf = static.reshape(n_streams, -1)
                    total += sum(float(w_static[j, s]) * float(sf[n, s]) for s in range(sf.shape[1]))
                gate[j] = total
            for d in range(hid):
                i_g = sigmoid(gate[d])
                f_g = k * sigmoid(gate[hid + d])
                o_g = sigmoid(gate[2 * hid + d])
                g_g = math.tanh(gate[3 * hid + d])
                new_c[n, d] = f_g * c[n, d] + i_g * g_g
                new_h[n, d] = o_g * math.tanh(new_c[n, d])
        h, c = new_h, new_c
        out[t] = h
    return out, h, c


def lstm_weights(rng: np.random.Generator, hid: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return rand(rng, 4 * hid, size, scale=0.6), rand(rng, 4 * hid, scale=0.3), rand(rng, 4 * hid, hid, scale=0.6)


def test_lstm_with_cont_restarts_in_the_middle_of_a_sequence() -> None:
    rng = np.random.default_rng(6)
    hid = 3
    x = rand(rng, 6, 2, 2, 2)  # I = 4: x's axes from 2 on are flattened
    cont = np.array([[0, 0], [1, 1], [1, 0], [1, 1], [0, 1], [1, 1]], dtype=np.float32)
    w_xc, b_c, w_hc = lstm_weights(rng, hid, 4)
    (h,) = run_layer("LSTM", [x, cont], [w_xc, b_c, w_hc], recurrent_param={"num_output": hid})
    want, _, _ = naive_lstm(x, cont, w_xc, b_c, w_hc)
    close(h, want)
    # a restart forgets everything before it: stream 1 from t = 2 equals a fresh run on x[2:]
    (fresh,) = run_layer("LSTM", [x[2:, 1:], cont[2:, 1:]], [w_xc, b_c, w_hc], recurrent_param={"num_output": hid})
    close(h[2:, 1:], fresh.astype(np.float64))
    # and without the restarts the outputs after them differ
    (no_restart,) = run_layer("LSTM", [x, np.ones_like(cont)], [w_xc, b_c, w_hc], recurrent_param={"num_output": hid})
    assert not np.allclose(no_restart[2:, 1], h[2:, 1], atol=1e-4)


def test_lstm_static_input_and_exposed_hidden_state() -> None:
    rng = np.random.default_rng(7)
    hid, t_steps, n = 2, 4, 3
    x, static = rand(rng, t_steps, n, 3), rand(rng, n, 2, 2)
    cont = np.array([[1, 0, 1], [1, 1, 1], [0, 1, 1], [1, 1, 0]], dtype=np.float32)
    h0, c0 = rand(rng, 1, n, hid), rand(rng, 1, n, hid)
    w_xc, b_c, w_hc = lstm_weights(rng, hid, 3)
    w_static = rand(rng, 4 * hid, 4, scale=0.5)
    rp = {"recurrent_param": {"num_output": hid, "expose_hidden": True}}
    h, h_t, c_t = run_layer("LSTM", [x, cont, static, h0, c0], [w_xc, b_c, w_static, w_hc], 3, **rp)
    want, want_h, want_c = naive_lstm(x, cont, w_xc, b_c, w_hc, static, w_static, h0, c0)
    close(h, want)
    close(h_t, want_h.reshape(1, n, hid))
    close(c_t, want_c.reshape(1, n, hid))
    # expose_hidden without a static input: bottom 2 is h_0, not a static input
    h2, _, _ = run_layer("LSTM", [x, cont, h0, c0], [w_xc, b_c, w_hc], 3, **rp)
    close(h2, naive_lstm(x, cont, w_xc, b_c, w_hc, h0=h0, c0=c0)[0])
    # a static input alone (no exposed state): the state starts at zero
    (h3,) = run_layer("LSTM", [x, cont, static], [w_xc, b_c, w_static, w_hc], recurrent_param={"num_output": hid})
    close(h3, naive_lstm(x, cont, w_xc, b_c, w_hc, static, w_static)[0])


# ----------------------------------------------------------------------------- RNN


def naive_rnn(x: np.ndarray, cont: np.ndarray, blobs: Sequence[np.ndarray], static: np.ndarray | None = None,
              h0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_s x_s]); o_t = tanh(W_ho h_t + b_o)."""
    if static is None:
        w_xh, b_h, w_hh, w_ho, b_o = blobs
        w_s = None
    else:
        w_xh, b_h, w_s, w_hh, w_ho, b_o = blobs
    t_steps, n_streams = x.shape[:2]
    hid = w_hh.shape[0]
    xf = x.reshape(t_steps, n_streams, -1)
    h = np.zeros((n_streams, hid)) if h0 is None else h0.reshape(n_streams, hid).astype(np.float64)
    out = np.zeros((t_steps, n_streams, hid))
    for t in range(t_steps):
        new_h = np.zeros_like(h)
        for n, j in product(range(n_streams), range(hid)):
            total = float(b_h[j]) + sum(float(w_xh[j, i]) * float(xf[t, n, i]) for i in range(xf.shape[2]))
            total += sum(float(w_hh[j, m]) * float(cont[t, n]) * h[n, m] for m in range(hid))
            if static is not None and w_s is not None:
                sf = static.reshape(n_streams, -1)
                total += sum(float(w_s[j, s]) * float(sf[n, s]) for s in range(sf.shape[1]))
            new_h[n, j] = math.tanh(total)
        h = new_h
        for n, j in product(range(n_streams), range(hid)):
            out[t, n, j] = math.tanh(float(b_o[j]) + sum(float(w_ho[j, m]) * h[n, m] for m in range(hid)))
    return out, h


def test_rnn_with_restarts() -> None:
    rng = np.random.default_rng(8)
    hid = 3
    x = rand(rng, 5, 2, 4)
    cont = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    blobs = [rand(rng, hid, 4, scale=0.5), rand(rng, hid, scale=0.3), rand(rng, hid, hid, scale=0.6),
             rand(rng, hid, hid, scale=0.6), rand(rng, hid, scale=0.3)]
    (o,) = run_layer("RNN", [x, cont], blobs, recurrent_param={"num_output": hid})
    close(o, naive_rnn(x, cont, blobs)[0])


def test_rnn_static_input_and_exposed_hidden_state() -> None:
    rng = np.random.default_rng(9)
    hid, n = 2, 2
    x, static, h0 = rand(rng, 3, n, 3), rand(rng, n, 5), rand(rng, 1, n, hid)
    cont = np.array([[1, 1], [1, 0], [1, 1]], dtype=np.float32)
    blobs = [rand(rng, hid, 3, scale=0.5), rand(rng, hid, scale=0.3), rand(rng, hid, 5, scale=0.4),
             rand(rng, hid, hid, scale=0.6), rand(rng, hid, hid, scale=0.6), rand(rng, hid, scale=0.3)]
    o, h_t = run_layer("RNN", [x, cont, static, h0], blobs, 2,
                       recurrent_param={"num_output": hid, "expose_hidden": True})
    want_o, want_h = naive_rnn(x, cont, blobs, static, h0)
    close(o, want_o)
    close(h_t, want_h.reshape(1, n, hid))


# ----------------------------------------------------------------------------- BatchNorm


def naive_batch_norm(x: np.ndarray, mean: np.ndarray, var: np.ndarray, factor: float, eps: float) -> np.ndarray:
    scale = 0.0 if factor == 0 else 1.0 / factor
    y = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        c = idx[1]
        y[idx] = (float(x[idx]) - float(mean[c]) * scale) / math.sqrt(float(var[c]) * scale + eps)
    return y


@pytest.mark.parametrize("factor", [1.0, 123.4, 0.0])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4, 5), (1, 3, 2, 2, 2)])
def test_batch_norm_global_stats_divides_by_the_factor(factor: float, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(10)
    x = rand(rng, *shape)
    mean, var = rand(rng, 3, scale=50.0), (rng.uniform(0.5, 200.0, 3)).astype(np.float32)
    (y,) = run_layer("BatchNorm", [x], [mean, var, np.array([factor], np.float32)], batch_norm_param={"eps": 1e-3})
    close(y, naive_batch_norm(x, mean, var, factor, 1e-3))


def test_batch_norm_factor_zero_means_zero_statistics() -> None:
    # factor 0: mean and variance are taken as 0, so y = x / sqrt(eps) with the default eps 1e-5
    x = np.array([[1.0, -2.0]], dtype=np.float32)
    (y,) = run_layer("BatchNorm", [x], [np.array([5.0, 7.0]), np.array([9.0, 9.0]), np.array([0.0])])
    close(y, np.array([[1.0, -2.0]]) / math.sqrt(1e-5), rtol=1e-6)


def test_batch_norm_explicit_batch_statistics() -> None:
    rng = np.random.default_rng(11)
    x = rand(rng, 3, 2, 2, 3, scale=2.0) + 1.0
    (y,) = run_layer("BatchNorm", [x], [np.full(2, 99.0), np.full(2, 99.0), np.array([1.0])],
                     batch_norm_param={"use_global_stats": False, "eps": 1e-5})
    want = np.zeros(x.shape)
    for c in range(2):
        values = [float(x[(n, c, *pos)]) for n in range(3) for pos in np.ndindex(2, 3)]
        m = sum(values) / len(values)
        v = sum((value - m) ** 2 for value in values) / len(values)  # biased, as Caffe's E((X - EX)^2)
        for n, pos in product(range(3), np.ndindex(2, 3)):
            want[(n, c, *pos)] = (float(x[(n, c, *pos)]) - m) / math.sqrt(v + 1e-5)
    close(y, want, atol=1e-5)


# ----------------------------------------------------------------------------- Scale and Bias


def test_scale_axis_2_num_axes_2_with_bias() -> None:
    rng = np.random.default_rng(12)
    x, f, b = rand(rng, 2, 3, 4, 5), rand(rng, 4, 5), rand(rng, 4, 5)
    (y,) = run_layer("Scale", [x], [f, b], scale_param={"axis": 2, "num_axes": 2, "bias_term": True})
    want = np.zeros(x.shape)
    for i, j, k, m in np.ndindex(*x.shape):
        want[i, j, k, m] = float(x[i, j, k, m]) * float(f[k, m]) + float(b[k, m])
    close(y, want)


def test_scale_two_bottom_form_with_bias() -> None:
    rng = np.random.default_rng(13)
    x, f, b = rand(rng, 2, 3, 4, 2), rand(rng, 3, 4), rand(rng, 3, 4)
    (y,) = run_layer("Scale", [x, f], [b], scale_param={"axis": 1, "bias_term": True})
    want = np.zeros(x.shape)
    for i, j, k, m in np.ndindex(*x.shape):
        want[i, j, k, m] = float(x[i, j, k, m]) * float(f[j, k]) + float(b[j, k])
    close(y, want)
    # without bias_term, from axis 0: factor (2, 3) over (2, 3, 4, 2)
    g = rand(rng, 2, 3)
    (y0,) = run_layer("Scale", [x, g], scale_param={"axis": 0})
    want0 = np.zeros(x.shape)
    for i, j, k, m in np.ndindex(*x.shape):
        want0[i, j, k, m] = float(x[i, j, k, m]) * float(g[i, j])
    close(y0, want0)


def test_scale_scalar_and_to_the_end() -> None:
    rng = np.random.default_rng(14)
    x = rand(rng, 2, 3, 2)
    (y,) = run_layer("Scale", [x], [np.array(2.5, np.float32)], scale_param={"num_axes": 0})
    close(y, x.astype(np.float64) * 2.5)
    f = rand(rng, 3, 2)
    (y,) = run_layer("Scale", [x], [f], scale_param={"axis": -2, "num_axes": -1})
    want = np.zeros(x.shape)
    for i, j, k in np.ndindex(*x.shape):
        want[i, j, k] = float(x[i, j, k]) * float(f[j, k])
    close(y, want)


def test_bias_learned_and_two_bottom() -> None:
    rng = np.random.default_rng(15)
    x, b = rand(rng, 2, 3, 4), rand(rng, 3)
    (y,) = run_layer("Bias", [x], [b])
    want = np.zeros(x.shape)
    for i, j, k in np.ndindex(*x.shape):
        want[i, j, k] = float(x[i, j, k]) + float(b[j])
    close(y, want)
    b2 = rand(rng, 3, 4)
    (y2,) = run_layer("Bias", [x, b2], bias_param={"axis": 1})
    want2 = np.zeros(x.shape)
    for i, j, k in np.ndindex(*x.shape):
        want2[i, j, k] = float(x[i, j, k]) + float(b2[j, k])
    close(y2, want2)


# ----------------------------------------------------------------------------- PReLU


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (2, 3, 2, 2)])
def test_prelu_per_channel(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(16)
    x, slope = rand(rng, *shape), np.array([0.1, -0.5, 2.0], np.float32)
    (y,) = run_layer("PReLU", [x], [slope])
    want = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        v = float(x[idx])
        want[idx] = v if v > 0 else float(slope[idx[1]]) * v
    close(y, want)


def test_prelu_channel_shared_0d_slope() -> None:
    x = np.array([[[-2.0, 3.0]], [[4.0, -1.0]]], dtype=np.float32)  # (2, 1, 2)
    (y,) = run_layer("PReLU", [x], [np.array(0.25, np.float32)], prelu_param={"channel_shared": True})
    close(y, np.array([[[-0.5, 3.0]], [[4.0, -0.25]]]))


# ----------------------------------------------------------------------------- LRN


def naive_lrn_across(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    half = (size - 1) // 2
    y = np.zeros(x.shape)
    n_, c_, h_, w_ = x.shape
    for n, c, h, w in np.ndindex(n_, c_, h_, w_):
        s = sum(float(x[n, cc, h, w]) ** 2 for cc in range(c - half, c + half + 1) if 0 <= cc < c_)
        y[n, c, h, w] = float(x[n, c, h, w]) * (k + alpha / size * s) ** -beta
    return y


def naive_lrn_within(x: np.ndarray, size: int, alpha: float, beta: float) -> np.ndarray:
    """Sum of the in-image x^2 over the size x size window, over size^2 (the padded area counts), then power."""
    half = (size - 1) // 2
    y = np.zeros(x.shape)
    n_, c_, h_, w_ = x.shape
    for n, c, h, w in np.ndindex(n_, c_, h_, w_):
        s = 0.0
        for hh, ww in product(range(h - half, h + half + 1), range(w - half, w + half + 1)):
            if 0 <= hh < h_ and 0 <= ww < w_:
                s += float(x[n, c, hh, ww]) ** 2
        y[n, c, h, w] = float(x[n, c, h, w]) * (1.0 + alpha * s / size**2) ** -beta
    return y


def test_lrn_across_channels_hand_values_at_the_edges() -> None:
    # local_size 5 on 3 channels: every window holds all 3 channels (the rest is zero padding);
    # x = 1, alpha = 5 -> alpha / size = 1, k = 1: scale = 1 + 3 = 4, beta = 1: y = 1 / 4
    x = np.ones((1, 3, 1, 1), np.float32)
    (y,) = run_layer("LRN", [x], lrn_param={"local_size": 5, "alpha": 5.0, "beta": 1.0})
    close(y, np.full((1, 3, 1, 1), 0.25))
    # local_size 3, alpha 3: channel 0 sees channels 0-1 (scale 3), channel 1 all three (4), channel 2 two (3)
    (y,) = run_layer("LRN", [x], lrn_param={"local_size": 3, "alpha": 3.0, "beta": 1.0, "k": 1.0})
    close(y, np.array([1 / 3, 1 / 4, 1 / 3]).reshape(1, 3, 1, 1))


@pytest.mark.parametrize(("size", "channels"), [(5, 3), (3, 7), (1, 2), (5, 6)])
def test_lrn_across_channels(size: int, channels: int) -> None:
    rng = np.random.default_rng(17)
    x = rand(rng, 2, channels, 3, 2, scale=3.0)
    params = {"local_size": size, "alpha": 0.7, "beta": 0.75, "k": 2.0}
    (y,) = run_layer("LRN", [x], lrn_param=params)
    close(y, naive_lrn_across(x, size, 0.7, 0.75, 2.0))


def test_lrn_defaults() -> None:
    # defaults: local_size 5, alpha 1, beta 0.75, k 1, ACROSS_CHANNELS
    rng = np.random.default_rng(18)
    x = rand(rng, 1, 4, 2, 2)
    (y,) = run_layer("LRN", [x])
    close(y, naive_lrn_across(x, 5, 1.0, 0.75, 1.0))


def test_lrn_within_channel_hand_value() -> None:
    # one pixel, local_size 3: the window holds x^2 = 4 and 8 padded zeros, average 4 / 9;
    # alpha 9: 1 + 9 * 4 / 9 = 5, beta 1: y = 2 / 5; k (here 7) is not used in this mode
    x = np.full((1, 1, 1, 1), 2.0, np.float32)
    (y,) = run_layer("LRN", [x], lrn_param={"local_size": 3, "alpha": 9.0, "beta": 1.0, "k": 7.0,
                                            "norm_region": "WITHIN_CHANNEL"})
    close(y, np.full((1, 1, 1, 1), 0.4))


@pytest.mark.parametrize(("size", "hw"), [(3, (4, 5)), (5, (3, 3)), (5, (6, 2)), (1, (2, 2))])
def test_lrn_within_channel_at_the_borders(size: int, hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(19)
    x = rand(rng, 2, 2, *hw, scale=2.0)
    (y,) = run_layer("LRN", [x], lrn_param={"local_size": size, "alpha": 0.9, "beta": 0.6,
                                            "norm_region": 1})  # the enum number of WITHIN_CHANNEL
    close(y, naive_lrn_within(x, size, 0.9, 0.6))


def test_lrn_rejects_even_size_and_non_4d() -> None:
    with pytest.raises(CaffeportError, match="odd"):
        run_layer("LRN", [np.ones((1, 3, 2, 2), np.float32)], lrn_param={"local_size": 4})
    with pytest.raises(CaffeportError, match="4-D"):
        run_layer("LRN", [np.ones((1, 3, 2), np.float32)])


# ----------------------------------------------------------------------------- MVN


def naive_mvn(x: np.ndarray, across: bool, normalize: bool, eps: float) -> np.ndarray:
    y = np.zeros(x.shape)
    n_, c_ = x.shape[:2]
    groups = [[(n,)] for n in range(n_)] if across else [[(n, c)] for n in range(n_) for c in range(c_)]
    for (key,) in groups:
        sub = x[key].astype(np.float64)
        values = list(sub.reshape(-1))
        m = sum(values) / len(values)
        centred = sub - m
        if normalize:
            std = math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
            centred = centred / (std + eps)  # eps is added to the standard deviation
        y[key] = centred
    return y


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_mvn(across: bool, normalize: bool) -> None:
    rng = np.random.default_rng(20)
    x = rand(rng, 2, 3, 4, 5, scale=2.0) + 3.0
    # a large eps tells eps-on-the-std from eps-on-the-variance apart
    (y,) = run_layer("MVN", [x], mvn_param={"across_channels": across, "normalize_variance": normalize, "eps": 0.5})
    close(y, naive_mvn(x, across, normalize, 0.5))


def test_mvn_defaults_and_eps_on_the_std() -> None:
    # one row (1, 1, 1, 2) of [1, 3]: mean 2, std 1; eps 1 on the std gives (+-1) / 2, on the variance (+-1) / sqrt 2
    x = np.array([[[[1.0, 3.0]]]], np.float32)
    (y,) = run_layer("MVN", [x], mvn_param={"eps": 1.0})
    close(y, np.array([[[[-0.5, 0.5]]]]))
    rng = np.random.default_rng(21)
    x = rand(rng, 2, 2, 3, 3)
    (y,) = run_layer("MVN", [x])  # defaults: normalize_variance, per channel, eps 1e-9
    close(y, naive_mvn(x, False, True, 1e-9), atol=1e-5)


def test_mvn_2d_input_gives_caffes_legacy_4d_top() -> None:
    x = np.array([[1.0, 2.0, 6.0]], np.float32)  # (1, 3): Caffe's top is (num, channels, 1, 1)
    (y,) = run_layer("MVN", [x], mvn_param={"across_channels": True, "eps": 0.0})
    m, std = 3.0, math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 3)
    close(y, (np.array([1.0, 2.0, 6.0]) - m).reshape(1, 3, 1, 1) / std)


# ----------------------------------------------------------------------------- Softmax


def naive_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    y = np.zeros(x.shape)
    for idx in np.ndindex(*x.shape):
        row = [float(x[(*idx[:axis], j, *idx[axis + 1 :])]) for j in range(x.shape[axis])]
        top = max(row)
        y[idx] = math.exp(float(x[idx]) - top) / sum(math.exp(v - top) for v in row)
    return y


@pytest.mark.parametrize(("axis", "param"), [(1, None), (2, 2), (2, -2), (3, -1), (0, 0)])
def test_softmax(axis: int, param: int | None) -> None:
    rng = np.random.default_rng(22)
    x = rand(rng, 2, 3, 4, 2, scale=3.0)
    params = {} if param is None else {"softmax_param": {"axis": param}}
    (y,) = run_layer("Softmax", [x], **params)
    close(y, naive_softmax(x, axis))


def test_softmax_large_inputs_do_not_overflow() -> None:
    # exp(1000) overflows float32; after subtracting the max: [e^-1, 1] / (1 + e^-1)
    x = np.array([[999.0, 1000.0]], np.float32)
    (y,) = run_layer("Softmax", [x])
    e = math.exp(-1.0)
    close(y, np.array([[e / (1 + e), 1 / (1 + e)]]))


# ----------------------------------------------------------------------------- OpenCV 4 as a second oracle


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        ((2, 3, 4, 5), "type: 'LRN' lrn_param { local_size: 5 alpha: 0.7 beta: 0.75 }"),
        ((1, 7, 3, 3), "type: 'LRN' lrn_param { local_size: 3 alpha: 2.0 beta: 0.9 }"),
        ((2, 2, 5, 6), "type: 'LRN' lrn_param { local_size: 3 alpha: 0.9 beta: 0.6 norm_region: WITHIN_CHANNEL }"),
        ((1, 2, 4, 3), "type: 'LRN' lrn_param { local_size: 5 alpha: 1.5 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
        ((2, 3, 4, 5), "type: 'MVN' mvn_param { across_channels: true }"),
        ((2, 3, 4, 5), "type: 'MVN' mvn_param { normalize_variance: false }"),
        ((2, 3, 4, 5), "type: 'Softmax' softmax_param { axis: 2 }"),
    ],
)
def test_weightless_layers_match_opencv(shape: tuple[int, ...], text: str, tmp_path: Any) -> None:
    """OpenCV's own Caffe importer and kernels on the same prototxt.

    Only parameters where OpenCV follows Caffe are compared: OpenCV 4 ignores
    LRN's ``k`` (it always uses 1) and adds MVN's ``eps`` to the variance
    rather than to the standard deviation, so LRN runs with k = 1 and MVN with
    its default eps of 1e-9 here; the Caffe rule for both is tested above.
    """
    try:
        import cv2
    except ImportError:  # pragma: no cover - OpenCV is in the test extra
        pytest.fail("OpenCV (cv2) is not installed; install the `test` extra")
    rng = np.random.default_rng(23)
    x = rand(rng, *shape, scale=2.0) + 0.5
    dims = "".join(f"input_dim: {d}\n" for d in shape)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f"name: 't'\ninput: 'b0'\n{dims}layer {{ name: 'L' bottom: 'b0' top: 't0' {text} }}\n")
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt))
    cv_net.setInput(x)
    want = np.asarray(cv_net.forward(), dtype=np.float64)
    net = caffeport.read(prototxt=prototxt)
    got = caffeport.run(net, {"b0": x})["t0"]
    close(got, want.reshape(got.shape), rtol=1e-5, atol=1e-6)
