"""Flatten order for channels-last targets.

Caffe flattens a (N, C, H, W) blob in C, H, W order; a channels-last Keras
Flatten sees (N, H, W, C) and flattens H, W, C. Every Dense that reads a
flattened spatial blob must have its input rows reordered, or the model runs
and is silently wrong. This is the trap converters fall into most.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net, Reshaped, Shape
from caffeport.layers.layout import note, report_action
from caffeport.layers.shapes import unknown_shape_cause
from caffeport.transforms.common import BlobIndex
from caffeport.transforms.registry import Options, register_pass

REORDERED = report_action("flatten-reorder", "flatten reorders")

#: layers that flatten their input to 2-D without reordering it (Caffe's C, H, W order)
_FLATTENING = frozenset({"Flatten", "Reshape"})


#: layers whose output has their input's layout, element by element (looked through to find a blob's origin)
_LAYOUT_KEEPING = frozenset({"ReLU", "ReLU6", "PReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "Power", "BNLL", "Swish",
                             "Clip", "Dropout", "BatchNorm", "Scale", "Bias", "FusedScale", "Split"})


def _from_a_dense_layer(graph: BlobIndex, index: int, blob: str) -> bool:
    """Whether ``blob`` is an InnerProduct's (N, num_output) output, maybe through element-wise layers.

    Such an input has no spatial axes, so the Dense after it needs no reorder
    whatever the unknown shapes are.
    """
    while (found := graph.last_writer(index, blob)) is not None:
        index, source = found
        if source.type == "InnerProduct":
            return int(source.param("inner_product_param").get("axis", 1)) == 1
        if source.type not in _LAYOUT_KEEPING or not source.bottoms:
            return False
        blob = source.bottoms[0]
    return False


def _spatial_source(graph: BlobIndex, index: int, layer: Layer) -> Shape | None:
    """The 4-D shape whose C, H, W order the InnerProduct's input columns follow, if any."""
    shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
    if shape is None:
        return () if layer.bottoms and _from_a_dense_layer(graph, index, layer.bottoms[0]) else None
    axis = int(layer.param("inner_product_param").get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    if axis != 1:
        return ()  # axis 2 on a 4-D blob flattens H, W per channel: no reorder
    if len(shape) == 4:
        return shape
    if len(shape) == 2:
        found = graph.last_writer(index, layer.bottoms[0])
        source = found[1] if found is not None else None
        if source is not None and source.type in _FLATTENING and source.bottom_shapes:
            before = source.bottom_shapes[0]
            if before is not None and len(before) == 4 and before[0] == shape[0]:
                return before
    return ()


@register_pass("flatten_channels_last", requires=("keras_layout", "channels_last"))
def flatten_channels_last(net: Net, options: Options) -> None:
    """Reorder Dense kernel rows from (C, H, W) to (H, W, C) where the input was a spatial blob."""
    graph = BlobIndex(net)
    for index, layer in enumerate(net.layers):
        if layer.type != "InnerProduct" or layer.framework_class != "Dense":
            continue
        source = _spatial_source(graph, index, layer)
        if source is None:
            cause = unknown_shape_cause(net, layer)
            note(net, layer, "warning", f"input shape unknown ({cause}): no flatten reorder applied")
            net.warnings.append(f"layer {layer.name!r}: input shape unknown because {cause}; the Dense kernel is "
                                "NOT reordered for a channels_last Flatten, which is wrong if its input is a "
                                "spatial blob")
            continue
        if not source:
            continue
        _, c, h, w = source
        if h * w == 1:
            continue
        kernel = layer.blobs[0]
        if kernel.shape[0] != c * h * w:
            raise ModelStructureError(f"Dense kernel has {kernel.shape[0]} inputs but its input blob {source} "
                                      f"flattens to {c * h * w}", layer=layer.name)
        out = kernel.shape[1]
        # a view: the copy happens block by block when the exporter writes it
        layer.blobs[0] = Reshaped(np.asarray(kernel).reshape(c, h, w, out).transpose(1, 2, 0, 3), (h * w * c, out))
        note(net, layer, REORDERED, f"input rows reordered C,H,W -> H,W,C for a {c}x{h}x{w} input")
