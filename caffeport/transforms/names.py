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
from caffeport.transforms.common import note
from caffeport.transforms.registry import Options, register_pass

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name)
    return cleaned if cleaned not in ("", ".", "..") else f"_{cleaned}_"


@register_pass("sanitize_names")
def sanitize_names(net: Net, options: Options) -> None:
    name_map: dict[str, str] = net.metadata.setdefault("name_map", {})
    owners: dict[str, str] = {}
    for layer in net.layers:
        new = safe_name(layer.name)
        if new in owners and owners[new] != layer.name:
            raise ModelStructureError(
                f"layers {owners[new]!r} and {layer.name!r} both become {new!r} once made safe for the output; "
                "rename one of them in the prototxt", layer=layer.name)
        owners[new] = layer.name
        if new != layer.name:
            name_map[layer.name] = new
            note(net, layer, "renamed", f"{layer.name!r} -> {new!r}")
            layer.name = new
