"""Every Caffe layer type caffeport knows, one module each (a family only where the semantics are one).

Each module registers a `LayerType` subclass with `register`; importing this
package imports them all. Look a type up with `layer_type`. See
`caffeport.layers.registry` for what a type can tell, and README's "Adding a
layer type".
"""

from caffeport.layers import (  # noqa: F401 - imported to register their types
    activations,
    argmax,
    batch_norm,
    concat,
    convolution,
    crop,
    data,
    deconvolution,
    detection_output,
    dropout,
    dummy_data,
    eltwise,
    embed,
    flatten,
    inner_product,
    input,
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
from caffeport.layers.registry import LAYER_TYPES, BlobShape, LayerType, Tops, Unsupported, layer_type, register

__all__ = ["LAYER_TYPES", "BlobShape", "LayerType", "Tops", "Unsupported", "layer_type", "register"]
