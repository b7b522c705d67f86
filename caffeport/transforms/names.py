"""Layer names safe for HDF5 groups, Keras layers and state_dict keys.

Caffe names may contain '/' (GoogLeNet's ``inception_3a/1x1``) which HDF5 and
Keras read as a path separator, and other characters Keras rejects. Every
character outside ``[A-Za-z0-9_.-]`` becomes ``_``; the mapping is reported
and stored, and two layers that would end up with one name are refused
rather than silently merged.
"""

from __future__ import annotations

import re

from caffeport.errors import ModelStructureError
from caffeport.ir import Net
from caffeport.layers.layout import note, report_action
from caffeport.transforms.registry import Options, register_pass

RENAMED = report_action("renamed", "renamed")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: PyTorch module names cannot hold '.', which separates state_dict key parts
_UNSAFE_TORCH = re.compile(r"[^A-Za-z0-9_-]")


def safe_name(name: str, unsafe: re.Pattern[str] = _UNSAFE) -> str:
    cleaned = unsafe.sub("_", name)
    return cleaned if cleaned not in ("", ".", "..") else f"_{cleaned}_"


@register_pass("sanitize_names")
def sanitize_names(net: Net, options: Options) -> None:
    _sanitize(net, _UNSAFE)


@register_pass("sanitize_names_torch")
def sanitize_names_torch(net: Net, options: Options) -> None:
    """As sanitize_names, and '.' too: ``conv1.1`` would make the state_dict key ``conv1.1.weight``."""
    _sanitize(net, _UNSAFE_TORCH)


def _sanitize(net: Net, unsafe: re.Pattern[str]) -> None:
    name_map: dict[str, str] = net.conversion.name_map
    owners: dict[str, str] = {}
    for layer in net.layers:
        new = safe_name(layer.name, unsafe)
        if new in owners and owners[new] != layer.name:
            raise ModelStructureError(
                f"layers {owners[new]!r} and {layer.name!r} both become {new!r} once made safe for the output; "
                "rename one of them in the prototxt", layer=layer.name)
        owners[new] = layer.name
        if new != layer.name:
            name_map[layer.name] = new
            note(net, layer, RENAMED, f"{layer.name!r} -> {new!r}")
            layer.name = new
