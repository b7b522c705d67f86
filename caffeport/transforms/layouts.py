"""Per-layer-type weight layout converters, one function per Caffe type and target family.

In the style of onnx2torch: each converter is registered for a target family
("keras", "torch") and one or more Caffe layer types, receives one layer whose
blobs are in Caffe's layout, and sets the layer's ``blobs`` (target layout),
``weight_names`` (the target layer's own order, which is what loaders assign
by) and ``target`` (the target layer class). It may return extra layers, for
Caffe blobs that the target keeps in a separate layer (an Embed bias, an RNN's
output projection). Layers of types nobody registered are handled by
`run_layouts`: passed through unchanged and flagged, or skipped.
"""

from __future__ import annotations

from collections.abc import Callable

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.layers.layout import note
from caffeport.transforms.registry import Options

Converter = Callable[[Net, Layer, Options], "list[Layer] | None"]

CONVERTERS: dict[tuple[str, str], Converter] = {}

#: types that never carry blobs of their own after the BatchNorm passes
_EMPTY_AFTER_FUSION = frozenset({"FusedScale"})


def converter(family: str, *types: str) -> Callable[[Converter], Converter]:
    """Decorator: register a layout converter for ``types`` in target ``family``."""

    def register(func: Converter) -> Converter:
        for layer_type in types:
            if (family, layer_type) in CONVERTERS:
                raise ValueError(f"a {family} converter for {layer_type!r} is already registered")
            CONVERTERS[family, layer_type] = func
        return func

    return register


def run_layouts(net: Net, options: Options, family: str) -> None:
    """Apply ``family``'s converter to every layer with blobs; handle unknown types."""
    result: list[Layer] = []
    for layer in net.layers:
        result.append(layer)
        if not layer.blobs or layer.type in _EMPTY_AFTER_FUSION:
            continue
        convert = CONVERTERS.get((family, layer.type))
        if convert is None:
            if options.skip_unknown:
                layer.blobs = []
                note(net, layer, "skipped", f"unknown layer type {layer.type!r} (--skip-unknown)")
            else:
                layer.weight_names = [str(i) for i in range(len(layer.blobs))]
                note(net, layer, "unknown-passed-through",
                     f"unknown layer type {layer.type!r}: {len(layer.blobs)} blob(s) kept in Caffe's layout")
            continue
        extra = convert(net, layer, options) or []
        result.extend(extra)
    net.layers = result


def expect_blobs(layer: Layer, *counts: int) -> None:
    """Refuse a layer whose blob count is none of ``counts`` (a corrupt or mismatched model)."""
    if len(layer.blobs) not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise ModelStructureError(f"{layer.type} layer has {len(layer.blobs)} blobs, expected {wanted}",
                                  layer=layer.name)
