"""The exporter registry: one named output format per module.

An exporter writes a transformed `Net` to a path it is given (a temporary
file that `caffeport.convert` renames into place on success), so no
exporter has to deal with partial output itself. Third-party formats register
through the same decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caffeport.errors import ModelStructureError
from caffeport.ir import Net


@dataclass(frozen=True)
class ExportOptions:
    """Format-independent choices passed to every exporter."""

    #: also write layers without weights (the seed converter's -n)
    include_weightless: bool = False
    #: for formats written against a concrete Keras model (keras3): ``module:function`` or a ``.keras`` file
    keras_model: str | None = None
    #: load the layers that fit when some shapes do not, instead of refusing
    allow_partial: bool = False
    #: write the whole model (``.keras``), not only its weights
    save_model: bool = False
    #: called as progress(bytes done, bytes total, layers done, layers total) by exporters that stream
    progress: Callable[[int, int, int, int], None] | None = None


Writer = Callable[[Net, Path, ExportOptions], None]


@dataclass(frozen=True)
class Exporter:
    name: str
    write: Writer
    #: the usual file name ending, e.g. ".h5"
    suffix: str
    #: the backend used when the user names none
    default_backend: str
    description: str


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(name: str, *, suffix: str, default_backend: str, description: str) -> Callable[[Writer], Writer]:
    def register(write: Writer) -> Writer:
        if name in EXPORTERS:
            raise ValueError(f"an exporter named {name!r} is already registered")
        EXPORTERS[name] = Exporter(name, write, suffix, default_backend, description)
        return write

    return register


def conversion_metadata(net: Net) -> dict[str, object]:
    """What a converted file records about its source and the conversion."""
    return {
        "source": {"caffemodel": net.caffemodel_path, "prototxt": net.prototxt_path, "format": net.format,
                   "name": net.name},
        "backend": net.metadata.get("backend"),
        "data_format": net.metadata.get("data_format"),
        "batchnorm_eps": net.metadata.get("batchnorm_eps", {}),
        "name_map": net.metadata.get("name_map", {}),
        "fused": net.metadata.get("fused", {}),
        "targets": {layer.name: layer.target for layer in net.layers if layer.target},
    }


def file_safe_names(net: Net) -> dict[str, str]:
    """Each layer's name as it may appear in a file path or HDF5 group: no '/', '..', NUL or other surprises.

    Backends that sanitise names (all but ``caffe``) already give safe names,
    which come back unchanged. With raw Caffe names, a name like ``../../x``
    must not become a zip member or group path outside its place; two layers
    that end up with one name are refused, as the sanitising pass does.
    """
    from caffeport.transforms.names import safe_name

    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    for layer in net.layers:
        safe = safe_name(layer.name)
        if owners.setdefault(safe, layer.name) != layer.name:
            raise ModelStructureError(
                f"layers {owners[safe]!r} and {layer.name!r} both become {safe!r} in the output; "
                "rename one of them in the prototxt", layer=layer.name)
        names[layer.name] = safe
    return names
