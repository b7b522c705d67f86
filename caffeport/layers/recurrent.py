"""LSTM and RNN (``RecurrentLayer``): x is (T, N, ...), cont (T, N); cont = 0 at t restarts stream n's state.

Shapes (``RecurrentLayer::Reshape``): h is ``(T, N, num_output)``; with
``expose_hidden`` the final states are extra tops of ``(1, N, num_output)``.
An optional third bottom is a static input, added at every step.

Blobs, in the order the unrolled net creates them (``LSTMLayer`` /
``RNNLayer::FillUnrolledNet``), with ``I`` the product of x's axes from 2 on,
``S`` that of the static input's from 1 on and ``H`` = num_output:
LSTM ``W_xc (4H, I), b_c (4H,), [W_xc_static (4H, S),] W_hc (4H, H)``;
RNN ``W_xh (H, I), b_h (H,), [W_xh_static (H, S),] W_hh (H, H), W_ho (H, H), b_o (H,)``.
"""

from __future__ import annotations

import math

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, positive
from caffeport.layers.registry import BlobShape, LayerType, Tops, register


class Recurrent(LayerType):
    param = "recurrent_param"
    #: gate blocks per step: 4 for LSTM (i, f, o, g), 1 for RNN
    gates = 1

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

    def input_sizes(self, bottoms: list[Shape | None]) -> tuple[int | None, int | None]:
        """(I, S): the per-step input size and the static input's size (``None`` when unknown or absent)."""
        x = bottoms[0] if bottoms else None
        static = bottoms[2] if len(bottoms) > 2 else None
        size = None if x is None else math.prod(x[2:])
        return size, None if static is None else math.prod(static[1:])

    def key_params(self, layer: Layer) -> str:
        return f"out={self.params_of(layer).get('num_output', '?')}"


@register("LSTM")
class LSTM(Recurrent):
    gates = 4

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        h = positive(layer, self.params_of(layer), "num_output", "recurrent_param")
        size, static = self.input_sizes(bottoms)
        blobs: list[BlobShape] = [(4 * h, size), (4 * h,)]
        if len(layer.bottoms) > 2:
            blobs.append((4 * h, static))
        return [*blobs, (4 * h, h)]


@register("RNN")
class RNN(Recurrent):
    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        h = positive(layer, self.params_of(layer), "num_output", "recurrent_param")
        size, static = self.input_sizes(bottoms)
        blobs: list[BlobShape] = [(h, size), (h,)]
        if len(layer.bottoms) > 2:
            blobs.append((h, static))
        return [*blobs, (h, h), (h, h), (h,)]
