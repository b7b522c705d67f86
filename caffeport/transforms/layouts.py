"""Running the per-type weight layouts of a target family over a net.

Each layer type's module under `caffeport.layers` holds its Keras and PyTorch
layouts (``LayerType.keras_layout`` / ``torch_layout``): given one layer whose
blobs are in Caffe's layout, they set the layer's ``blobs`` (target layout),
``weight_names`` (the target layer's own order, which is what loaders assign
by) and ``framework_class`` (the target layer class), and may return extra layers for
Caffe blobs the target keeps apart (an Embed bias, an RNN's output
projection). Layers of types without a layout are passed through unchanged
and flagged, or skipped (``skip_unknown``).
"""

from __future__ import annotations

from caffeport.ir import Layer, Net
from caffeport.layers import layer_type
from caffeport.layers.layout import Options, note, report_action

PASSED_THROUGH = report_action("unknown-passed-through", "unknown types passed through")
SKIPPED = report_action("skipped", "skipped")

#: types that never carry blobs of their own after the BatchNorm passes
_EMPTY_AFTER_FUSION = frozenset({"FusedScale"})


def run_layouts(net: Net, options: Options, family: str) -> None:
    """Apply ``family``'s layout of each layer's type to every layer with blobs; handle unknown types."""
    result: list[Layer] = []
    for layer in net.layers:
        result.append(layer)
        if not layer.blobs or layer.type in _EMPTY_AFTER_FUSION:
            continue
        kind = layer_type(layer.type)
        if not kind.has_layout(family):
            if options.skip_unknown:
                layer.blobs = []
                note(net, layer, SKIPPED, f"unknown layer type {layer.type!r} (skip_unknown)")
            else:
                layer.weight_names = [str(i) for i in range(len(layer.blobs))]
                note(net, layer, PASSED_THROUGH,
                     f"unknown layer type {layer.type!r}: {len(layer.blobs)} blob(s) kept in Caffe's layout")
            continue
        extra = getattr(kind, f"{family}_layout")(net, layer, options) or []
        result.extend(extra)
    net.layers = result
