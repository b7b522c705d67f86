"""LSTM and RNN (``RecurrentLayer``): x is (T, N, ...), cont (T, N); cont = 0 at t restarts stream n's state.

Bottoms (``RecurrentLayer::LayerSetUp``): x, cont, then an optional static
input ``(N, ...)`` (added at every step), then, with ``expose_hidden``, the
initial states ``(1, N, num_output)``: h_0 (and c_0 for LSTM). Caffe tells the
static input is there by counting: more bottoms than ``2 + the exposed states``.

Shapes (``RecurrentLayer::Reshape``): h is ``(T, N, num_output)``; with
``expose_hidden`` the final states are extra tops of ``(1, N, num_output)``
(h_T, and c_T for LSTM, in that order).

Blobs, in the order the unrolled net creates them (``LSTMLayer`` /
``RNNLayer::FillUnrolledNet``), with ``I`` the product of x's axes from 2 on,
``S`` that of the static input's from 1 on and ``H`` = num_output:
LSTM ``W_xc (4H, I), b_c (4H,), [W_xc_static (4H, S),] W_hc (4H, H)``;
RNN ``W_xh (H, I), b_h (H,), [W_xh_static (H, S),] W_hh (H, H), W_ho (H, H), b_o (H,)``.

Forward (the unrolled net; ``LSTMUnitLayer::Forward_cpu`` for the cell):
x of all steps goes through ``W x + b`` at once; the static input through its
own weight (no bias) once. At each step t the previous hidden state is first
multiplied by ``cont_t`` (per stream), then

* LSTM: ``gates = W_hc (cont_t h_{t-1}) + (W_xc x_t + b_c) [+ W_xc_static x_s]``,
  split in Caffe's order i, f, o, g (H values each);
  ``i, o = sigmoid``, ``f = cont_t * sigmoid`` (exactly 0 where cont_t is 0),
  ``g = tanh``; ``c_t = f c_{t-1} + i g``; ``h_t = o tanh(c_t)``. The top is h.
  LSTMUnit evaluates sigmoid and tanh (as ``2 sigmoid(2x) - 1``) with double
  constants, so they are computed in float64 here and rounded to float32.
* RNN: ``h_t = tanh(W_hh (cont_t h_{t-1}) + (W_xh x_t + b_h) [+ W_xh_static x_s])``,
  ``o_t = tanh(W_ho h_t + b_o)``. The top is o.

Without ``expose_hidden`` Caffe seeds each Forward with the final states of
the previous one (zeros in a freshly loaded net); the reference is stateless,
so it computes the first Forward of a fresh net: h_0 = c_0 = 0. (A sequence
starting with cont = 0, as Caffe's examples do, does not depend on it.)
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Net, Shape
from caffeport.layers.fields import error, positive
from caffeport.layers.layout import SPLIT, Options, expect_blobs, note
from caffeport.layers.registry import BlobShape, LayerType, Tops, register


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    """LSTMUnit's sigmoid, ``1 / (1 + exp(-x))`` with double constants, rounded to float32."""
    x64 = x.astype(np.float64)
    return (1.0 / (1.0 + np.exp(-x64))).astype(np.float32)


def _tanh64(x: np.ndarray) -> np.ndarray:
    """LSTMUnit's tanh, ``2 sigmoid(2x) - 1`` in double, rounded to float32."""
    x64 = x.astype(np.float64)
    return (2.0 / (1.0 + np.exp(-2.0 * x64)) - 1.0).astype(np.float32)


class Recurrent(LayerType):
    param = "recurrent_param"
    #: gate blocks per step: 4 for LSTM (i, f, o, g), 1 for RNN
    gates = 1
    #: recurrent state blobs (exposed as bottoms and tops with expose_hidden): LSTM h and c, RNN h
    states = 1

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        x = bottoms[0]
        if len(layer.bottoms) < 2:
            raise error(layer, f"{layer.type} needs bottoms x and cont, got {len(layer.bottoms)}")
        if len(x) < 2:
            raise error(layer, f"{layer.type} input must be (T, N, ...), got {x}")
        cont = layer.bottom_shapes[1] if len(layer.bottom_shapes) > 1 else None
        if cont is not None and cont != x[:2]:
            raise error(layer, f"cont must be (T, N) = {x[:2]}, got {cont}")
        num_output = positive(layer, self.params_of(layer), "num_output", "recurrent_param")
        return [(*x[:2], num_output)] + [(1, x[1], num_output)] * (len(layer.tops) - 1)

    def weighted(self, layer: Layer) -> bool:
        return True

    def exposed(self, layer: Layer) -> int:
        """How many state blobs are extra bottoms and tops (``expose_hidden``), 0 without it."""
        return self.states if self.params_of(layer).get("expose_hidden", False) else 0

    def has_static(self, layer: Layer) -> bool:
        """Caffe's rule: a static input is there when there are more bottoms than x, cont and the exposed states."""
        return len(layer.bottoms) > 2 + self.exposed(layer)

    def input_sizes(self, layer: Layer, bottoms: list[Shape | None]) -> tuple[int | None, int | None]:
        """(I, S): the per-step input size and the static input's size (``None`` when unknown or absent)."""
        x = bottoms[0] if bottoms else None
        static = bottoms[2] if self.has_static(layer) and len(bottoms) > 2 else None
        size = None if x is None else math.prod(x[2:])
        return size, None if static is None else math.prod(static[1:])

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"out={p.get('num_output', '?')}" + (" expose_hidden" if p.get("expose_hidden") else "")

    # ------------------------------------------------------------------ forward helpers

    def check_bottoms(self, layer: Layer, bottoms: list[np.ndarray]) -> tuple[int, int, int]:
        """(T, N, H) after Caffe's checks of x, cont and the optional bottoms."""
        h = positive(layer, self.params_of(layer), "num_output", "recurrent_param")
        x, cont = bottoms[0], bottoms[1]
        if x.ndim < 2:
            raise error(layer, f"{layer.type} input must be (T, N, ...), got {list(x.shape)}")
        t, n = x.shape[:2]
        if cont.shape != (t, n):
            raise error(layer, f"cont must be (T, N) = {[t, n]}, got {list(cont.shape)}")
        expected = 2 + self.has_static(layer) + self.exposed(layer)
        if len(bottoms) != expected:
            raise error(layer, f"{layer.type} with these parameters takes {expected} bottoms, got {len(bottoms)}")
        if self.has_static(layer) and (bottoms[2].ndim < 1 or bottoms[2].shape[0] != n):
            raise error(layer, f"the static input must be (N = {n}, ...), got {list(bottoms[2].shape)}")
        for state in bottoms[2 + self.has_static(layer) :]:
            if state.shape != (1, n, h):
                raise error(layer, f"an initial state must be (1, {n}, {h}), got {list(state.shape)}")
        want_tops = 1 + self.exposed(layer)
        if len(layer.tops) != want_tops:
            raise error(layer, f"{layer.type} with these parameters gives {want_tops} tops, got {len(layer.tops)}")
        return t, n, h

    def initial_states(self, layer: Layer, bottoms: list[np.ndarray], n: int, h: int) -> list[np.ndarray]:
        if self.exposed(layer):
            first = 2 + self.has_static(layer)
            return [bottoms[first + i].reshape(n, h) for i in range(self.states)]
        return [np.zeros((n, h), dtype=np.float32) for _ in range(self.states)]

    def input_terms(
        self, layer: Layer, bottoms: list[np.ndarray], t: int, n: int, width: int
    ) -> tuple[np.ndarray, np.ndarray | None, int]:
        """``W x + b`` for all steps ``(T, N, width)``, ``W_static x_static`` ``(N, width)`` or None, next blob."""
        x = bottoms[0].reshape(t * n, -1)
        w = self.blob(layer, 0).reshape(width, x.shape[1])
        b = self.blob(layer, 1).reshape(1, width)
        x_term = (x @ w.T + b).reshape(t, n, width)
        if not self.has_static(layer):
            return x_term, None, 2
        xs = bottoms[2].reshape(n, -1)
        ws = self.blob(layer, 2).reshape(width, xs.shape[1])
        return x_term, xs @ ws.T, 3


@register("LSTM")
class LSTM(Recurrent):
    """See the module docstring."""

    gates = 4
    states = 2

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        h = positive(layer, self.params_of(layer), "num_output", "recurrent_param")
        size, static = self.input_sizes(layer, bottoms)
        blobs: list[BlobShape] = [(4 * h, size), (4 * h,)]
        if self.has_static(layer):
            blobs.append((4 * h, static))
        return [*blobs, (4 * h, h)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        t_steps, n, h = self.check_bottoms(layer, bottoms)
        x_term, static_term, next_blob = self.input_terms(layer, bottoms, t_steps, n, 4 * h)
        w_hc = self.blob(layer, next_blob).reshape(4 * h, h)
        h_prev, c_prev = self.initial_states(layer, bottoms, n, h)
        cont = bottoms[1]
        hs = np.empty((t_steps, n, h), dtype=np.float32)
        for t in range(t_steps):
            ct = cont[t].reshape(n, 1)
            gates = (ct * h_prev) @ w_hc.T + x_term[t]  # Eltwise SUM order: W_hc h, then W_xc x + b_c, then static
            if static_term is not None:
                gates = gates + static_term
            i = _sigmoid64(gates[:, :h])
            f = np.where(ct == 0, np.float32(0), ct * _sigmoid64(gates[:, h : 2 * h]))
            o = _sigmoid64(gates[:, 2 * h : 3 * h])
            g = _tanh64(gates[:, 3 * h :])
            c_prev = f * c_prev + i * g
            h_prev = o * _tanh64(c_prev)
            hs[t] = h_prev
        tops = [hs]
        if self.exposed(layer):
            tops += [h_prev.reshape(1, n, h), c_prev.reshape(1, n, h)]
        return tops

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Gate blocks already in Keras order (lstm_gate_order): kernel (I, 4H), recurrent_kernel (H, 4H), bias."""
        expect_blobs(layer, 3)
        w_x, b, w_h = (np.asarray(x) for x in layer.blobs)
        layer.blobs = [w_x.T, w_h.T, b.reshape(-1)]
        layer.weight_names = ["kernel", "recurrent_kernel", "bias"]
        layer.framework_class = "LSTM"
        note(net, layer, "converted", f"LSTM kernel {w_x.T.shape}, recurrent_kernel {w_h.T.shape}")
        return None

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Gates already i, f, g, o: weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh zeros (Caffe has one)."""
        expect_blobs(layer, 3)
        w_x, b, w_h = (np.asarray(x) for x in layer.blobs)
        layer.blobs = [w_x, w_h, b.reshape(-1), np.zeros(b.size, dtype=b.dtype)]
        layer.weight_names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        layer.framework_class = "LSTM"
        return None


@register("RNN")
class RNN(Recurrent):
    """See the module docstring."""

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        h = positive(layer, self.params_of(layer), "num_output", "recurrent_param")
        size, static = self.input_sizes(layer, bottoms)
        blobs: list[BlobShape] = [(h, size), (h,)]
        if self.has_static(layer):
            blobs.append((h, static))
        return [*blobs, (h, h), (h, h), (h,)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        t_steps, n, h = self.check_bottoms(layer, bottoms)
        x_term, static_term, next_blob = self.input_terms(layer, bottoms, t_steps, n, h)
        w_hh = self.blob(layer, next_blob).reshape(h, h)
        w_ho = self.blob(layer, next_blob + 1).reshape(h, h)
        b_o = self.blob(layer, next_blob + 2).reshape(1, h)
        (h_prev,) = self.initial_states(layer, bottoms, n, h)
        cont = bottoms[1]
        hs = np.empty((t_steps, n, h), dtype=np.float32)
        for t in range(t_steps):
            pre = (cont[t].reshape(n, 1) * h_prev) @ w_hh.T + x_term[t]
            if static_term is not None:
                pre = pre + static_term
            h_prev = np.tanh(pre)
            hs[t] = h_prev
        o = np.tanh((hs.reshape(t_steps * n, h) @ w_ho.T + b_o).reshape(t_steps, n, h))
        tops = [o]
        if self.exposed(layer):
            tops.append(h_prev.reshape(1, n, h))
        return tops

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """(W_xh, b_h, W_hh, W_ho, b_o) -> SimpleRNN + Dense ``<name>_output`` (tanh applied after it, as Caffe)."""
        expect_blobs(layer, 5)
        w_xh, b_h, w_hh, w_ho, b_o = (np.asarray(x) for x in layer.blobs)
        layer.blobs = [w_xh.T, w_hh.T, b_h.reshape(-1)]
        layer.weight_names = ["kernel", "recurrent_kernel", "bias"]
        layer.framework_class = "SimpleRNN"
        output = Layer(name=f"{layer.name}_output", type="RNNOutput", blobs=[w_ho.T, b_o.reshape(-1)],
                       weight_names=["kernel", "bias"], framework_class="Dense", bottoms=list(layer.tops),
                       tops=list(layer.tops))
        note(net, layer, SPLIT, f"SimpleRNN {layer.name!r} + Dense {output.name!r} (apply tanh after it, as Caffe)")
        return [output]

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        expect_blobs(layer, 5)
        w_xh, b_h, w_hh, w_ho, b_o = (np.asarray(x) for x in layer.blobs)
        layer.blobs = [w_xh, w_hh, b_h.reshape(-1), np.zeros(b_h.size, dtype=b_h.dtype)]
        layer.weight_names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        layer.framework_class = "RNN"
        output = Layer(name=f"{layer.name}_output", type="RNNOutput", blobs=[w_ho, b_o.reshape(-1)],
                       weight_names=["weight", "bias"], framework_class="Linear", bottoms=list(layer.tops),
                       tops=list(layer.tops))
        note(net, layer, SPLIT, f"RNN {layer.name!r} + Linear {output.name!r} (apply tanh after it, as Caffe)")
        return [output]
