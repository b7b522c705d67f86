"""Keras layouts: the data-format passes and the pass that gives every layer its Keras weights.

Each layer type's Keras layout is its module's ``keras_layout`` method (under
`caffeport.layers`). Keras loaders assign weights by position, so
``weight_names`` order is correctness. Kernel layouts do not depend on the data
format; the PReLU alpha does (it spans the non-shared axes), which is why
``keras_layout`` requires a data-format pass before it.
"""

from __future__ import annotations

from caffeport.ir import Net
from caffeport.transforms.layouts import run_layouts
from caffeport.transforms.registry import Options, register_pass


@register_pass("channels_last", provides=("data_format", "channels_last"))
def channels_last(net: Net, options: Options) -> None:
    net.conversion.data_format = "channels_last"


@register_pass("channels_first", provides=("data_format",))
def channels_first(net: Net, options: Options) -> None:
    net.conversion.data_format = "channels_first"


@register_pass("keras_layout", requires=("data_format", "lstm_gates_ifgo", "batchnorm_fused"),
               provides=("layout", "keras_layout"))
def keras_layout(net: Net, options: Options) -> None:
    run_layouts(net, options, "keras")
    net.conversion.weight_names = "keras"
