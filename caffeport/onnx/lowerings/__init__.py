"""The ONNX lowering of every Caffe layer type caffeport exports, one module each (names mirror `caffeport.layers`).

Importing this package imports them all; each registers its `Lowering` in
`LOWERINGS` with the `lowering` decorator.
"""

from caffeport.onnx.lowerings import (  # noqa: F401 - imported to register their lowerings
    activations,
    argmax,
    batch_norm,
    concat,
    convolution,
    crop,
    deconvolution,
    detection_output,
    dropout,
    dummy_data,
    eltwise,
    embed,
    flatten,
    inner_product,
    interp,
    lrn,
    mvn,
    normalize,
    permute,
    pooling,
    prelu,
    prior_box,
    recurrent,
    reduction,
    reorg,
    reshape,
    scale,
    shuffle_channel,
    slice,
    softmax,
    split,
    spp,
    tile,
    training,
    upsample,
)
from caffeport.onnx.lowerings.registry import LOWERINGS, Context, Lowering, lowering

__all__ = ["LOWERINGS", "Context", "Lowering", "lowering"]
