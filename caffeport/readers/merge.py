"""Combine a prototxt (structure) with a caffemodel (weights), as Caffe does.

Caffe's ``CopyTrainedLayersFrom`` walks the weights file and copies each
layer's blobs into the deploy net's layer of the same name, silently ignoring
weights no layer asks for. Real models lean on this: the caffemodel usually
holds the *training* net (data and loss layers) and may hold layers the
deploy prototxt dropped (MTCNN det2's ``conv5-3``). We match the same way, but
report both kinds of mismatch instead of hiding them.
"""

from __future__ import annotations

from caffeport.ir import Layer, MatchReport, Net
from caffeport.layers import layer_type


def expects_weights(layer: Layer) -> bool:
    """Whether Caffe would give this layer learned blobs of its own (its type's `LayerType.weighted`)."""
    return layer_type(layer.type).weighted(layer)


def merge(structure: Net, weights: Net) -> Net:
    """A net with ``structure``'s layers and parameters and ``weights``' blobs, matched by name."""
    by_name: dict[str, Layer] = {}
    for layer in weights.layers:
        if layer.name in by_name and layer.blobs and by_name[layer.name].blobs:
            structure.warnings.append(
                f"the caffemodel has two layers named {layer.name!r} with weights; the later one is used, as in Caffe"
            )
        if layer.blobs or layer.name not in by_name:
            by_name[layer.name] = layer
    report = MatchReport()
    taken: set[str] = set()
    for layer in structure.layers:
        source = by_name.get(layer.name)
        if source is not None and source.blobs:
            layer.blobs = source.blobs
            taken.add(layer.name)
            if source.type and source.type != layer.type:
                structure.warnings.append(
                    f"layer {layer.name!r} is {layer.type} in the prototxt but {source.type} in the caffemodel"
                )
        elif expects_weights(layer):
            report.missing_weights.append(layer.name)
    report.unused_weights = [
        layer.name for layer in weights.layers if layer.blobs and layer.name not in taken
    ]
    report.unused_weights = list(dict.fromkeys(report.unused_weights))
    structure.match = report
    structure.source_format = weights.source_format
    structure.caffemodel_path = weights.caffemodel_path
    if not structure.inputs:
        structure.inputs = dict(weights.inputs)
    if not structure.name:
        structure.name = weights.name
    structure.warnings = weights.warnings + structure.warnings
    return structure
