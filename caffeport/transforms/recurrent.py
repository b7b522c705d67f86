"""LSTM gate order: Caffe stores the 4H gate blocks as i, f, o, g.

Keras wants i, f, c(=g), o and PyTorch i, f, g, o: the same permutation of
blocks [0, 1, 3, 2] for both, applied to W_xc, b_c and W_hc along the 4H axis.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Net
from caffeport.layers.layout import as_compute, note, report_action
from caffeport.transforms.registry import Options, register_pass

REORDERED = report_action("lstm-gate-reorder", "LSTM gate reorders")

CAFFE_TO_IFGO = [0, 1, 3, 2]


def reorder_gates(blob: np.ndarray, hidden: int) -> np.ndarray:
    b = as_compute(blob)
    blocks = b.reshape(4, hidden, *b.shape[1:])
    return np.ascontiguousarray(blocks[CAFFE_TO_IFGO].reshape(b.shape))


@register_pass("lstm_gate_order", provides=("lstm_gates_ifgo",))
def lstm_gate_order(net: Net, options: Options) -> None:
    for layer in net.layers:
        if layer.type != "LSTM" or not layer.blobs:
            continue
        if len(layer.blobs) != 3:
            raise ModelStructureError(f"LSTM has {len(layer.blobs)} blobs, expected 3 (W_xc, b_c, W_hc)",
                                      layer=layer.name)
        four_h = layer.blobs[0].shape[0]
        if four_h % 4 or layer.blobs[1].size != four_h or layer.blobs[2].shape[0] != four_h:
            raise ModelStructureError(f"LSTM blob shapes {[b.shape for b in layer.blobs]} are not 4H-blocked",
                                      layer=layer.name)
        hidden = four_h // 4
        layer.blobs = [reorder_gates(layer.blobs[0], hidden), reorder_gates(layer.blobs[1].reshape(-1), hidden),
                       reorder_gates(layer.blobs[2], hidden)]
        note(net, layer, REORDERED, "gate blocks i,f,o,g -> i,f,g,o")
