"""LSTM and RNN, unrolled over the prototxt's T steps with Caffe's ``cont`` restarts computed exactly.

ONNX's ``LSTM``/``RNN`` ops have no per-step, per-stream state reset, so
``cont`` (Caffe's sequence-continuation input, 0 where stream n restarts at
step t) could only be honoured for an all-ones ``cont``. Instead the
recurrence is written out step by step with the ops Caffe's unrolled net
uses, which is exact whatever ``cont`` holds (see
`caffeport.layers.recurrent`): ``W x + b`` for all steps at once (and the
static input's term once), then per step ``h = cont_t * h``, the gates in
Caffe's own order i, f, o, g (split in that order, so no reordering to
ONNX's iofc is needed), ``f = cont_t * sigmoid`` (exactly 0 where cont is 0),
``c = f c + i g``, ``h = o tanh(c)``; RNN ``h = tanh(W_hh h + W_xh x + b)``,
``o = tanh(W_ho h + b_o)``. With ``expose_hidden`` the initial states are the
extra bottoms and the final ones the extra tops. The unrolled graph fixes T
and N to the prototxt's, so ``--dynamic-batch`` is refused for these layers.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer
from caffeport.layers import layer_type
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("LSTM", "RNN")
class Recurrent(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        if dynamic_batch:
            return ("unrolled over the prototxt's T steps and N streams: a dynamic batch (axis 0 is T here) "
                    "is not supported; export without --dynamic-batch")
        return None

    def lower(self, ctx: Context) -> list[str]:
        kind = layer_type(ctx.layer.type)
        g = ctx.graph
        lstm = ctx.layer.type == "LSTM"
        t_steps, n = ctx.shape[:2]
        h = int(ctx.params()["num_output"])
        width = 4 * h if lstm else h
        has_static = kind.has_static(ctx.layer)  # type: ignore[attr-defined]
        exposed = kind.exposed(ctx.layer)  # type: ignore[attr-defined]
        rows = g.reshape(ctx.x, [t_steps * n, -1], "rows")
        # the weights are streamed from the model file when written (Context.weight), transposes included
        x_term = ctx.op("Add", [ctx.op("MatMul", [rows, ctx.weight(0, "W_x", (width, -1), transpose=True)],
                                       "x_matmul"), ctx.weight(1, "b", (width,))], "x_biased")
        x_term = g.reshape(x_term, [t_steps, n, width], "x_term")
        next_blob = 2
        static_term = None
        if has_static:
            static = g.reshape(ctx.bottoms[2], [n, -1], "static")
            static_term = ctx.op("MatMul", [static, ctx.weight(2, "W_static", (width, -1), transpose=True)],
                                 "static_term")
            next_blob = 3
        w_h = ctx.weight(next_blob, "W_h", (width, h), transpose=True)
        first_state = 2 + int(has_static)
        states = []
        for i in range(2 if lstm else 1):
            if exposed:
                states.append(g.reshape(ctx.bottoms[first_state + i], [n, h], f"state{i}"))
            else:
                states.append(ctx.const(np.zeros((n, h), np.float32), f"state{i}"))
        h_prev = states[0]
        c_prev = states[1] if lstm else ""
        zero = g.scalar(0.0, "zero")
        steps = []
        for t in range(t_steps):
            index = g.const(np.int64(t), f"t{t}", np.int64)
            ct = g.reshape(ctx.op("Gather", [ctx.bottoms[1], index], f"cont{t}", axis=0), [n, 1], f"cont{t}_col")
            gates = ctx.op("Add", [ctx.op("MatMul", [ctx.op("Mul", [ct, h_prev], f"h{t}_masked"), w_h],
                                          f"h{t}_matmul"),
                                   ctx.op("Gather", [x_term, index], f"x{t}", axis=0)], f"gates{t}")
            if static_term is not None:
                gates = ctx.op("Add", [gates, static_term], f"gates{t}_static")
            if lstm:
                i_, f_, o_, g_ = g.split(gates, [h] * 4, 1, f"gates{t}_split")
                i_ = ctx.op("Sigmoid", [i_], f"i{t}")
                f_ = ctx.op("Where", [ctx.op("Equal", [ct, zero], f"restart{t}"), zero,
                                      ctx.op("Mul", [ct, ctx.op("Sigmoid", [f_], f"f{t}_sigmoid")], f"f{t}_cont")],
                            f"f{t}")
                o_ = ctx.op("Sigmoid", [o_], f"o{t}")
                g_ = ctx.op("Tanh", [g_], f"g{t}")
                c_prev = ctx.op("Add", [ctx.op("Mul", [f_, c_prev], f"c{t}_kept"),
                                        ctx.op("Mul", [i_, g_], f"c{t}_input")], f"c{t}")
                h_prev = ctx.op("Mul", [o_, ctx.op("Tanh", [c_prev], f"c{t}_tanh")], f"h{t}")
            else:
                h_prev = ctx.op("Tanh", [gates], f"h{t}")
            steps.append(g.unsqueeze(h_prev, [0], f"h{t}_step"))
        hs = ctx.op("Concat", steps, "hs", axis=0) if len(steps) > 1 else steps[0]
        if lstm:
            tops = [hs]
        else:
            w_o = ctx.weight(next_blob + 1, "W_o", (h, h), transpose=True)
            b_o = ctx.weight(next_blob + 2, "b_o", (h,))
            tops = [ctx.op("Tanh", [ctx.op("Add", [ctx.op("MatMul", [hs, w_o], "o_matmul"), b_o], "o_biased")], "o")]
        if exposed:
            tops.append(g.reshape(h_prev, [1, n, h], "h_final"))
            if lstm:
                tops.append(g.reshape(c_prev, [1, n, h], "c_final"))
        return tops
