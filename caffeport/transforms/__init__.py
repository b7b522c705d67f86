"""Transforms: small passes over the IR, composed per target backend.

Backends (each a list of pass names, see `BACKENDS`):

- ``tensorflow`` (default) and ``cntk``: Keras channels_last, with the flatten reorder;
- ``channels_first``: Keras channels_first, no flatten reorder;
- ``theano``: channels_first plus spatially flipped convolution kernels;
- ``torch``: Caffe layouts kept, PyTorch names and LSTM gate order;
- ``caffe``: identity, the raw blobs;
- ``pycaffe``: the raw blobs in the shapes Caffe's layers hold (legacy 4-D blobs reshaped), as pycaffe gave them.

``Options(matlab=True)`` runs ``matlab_row_major`` (`caffeport.transforms.matlab`) before any backend's passes.

Add one with `register_backend("name", [...pass names...])`; add a pass with
`@register_pass("name")`.
"""

from caffeport.transforms import (
    batchnorm,
    flatten,
    keras_layout,
    matlab,
    names,
    native_shapes,
    recurrent,
    theano,
    torch_layout,
)
from caffeport.transforms.registry import BACKENDS, PASSES, Options, register_backend, register_pass, transform

# the modules register their passes when imported
_ = (batchnorm, flatten, keras_layout, matlab, names, native_shapes, recurrent, theano, torch_layout)

_KERAS_COMMON = ["batchnorm_scale_factor", "fuse_batchnorm_scale", "lstm_gate_order"]
register_backend("tensorflow", [*_KERAS_COMMON, "channels_last", "keras_layout", "flatten_channels_last",
                                "sanitize_names"])
register_backend("cntk", BACKENDS["tensorflow"])
register_backend("channels_first", [*_KERAS_COMMON, "channels_first", "keras_layout", "sanitize_names"])
register_backend("theano", [*_KERAS_COMMON, "channels_first", "keras_layout", "flip_kernels", "sanitize_names"])
register_backend("torch", ["batchnorm_scale_factor", "fuse_batchnorm_scale", "lstm_gate_order", "torch_layout",
                           "sanitize_names_torch"])
register_backend("caffe", [])
register_backend("pycaffe", ["native_shapes"])

__all__ = ["BACKENDS", "PASSES", "Options", "register_backend", "register_pass", "transform"]
