"""Exporters: one module per output format, registered by name in `EXPORTERS`.

Every module of this package registers its format(s) with `register_exporter`
when imported; `load_exporters` imports them all (and third-party formats
declared under the ``caffeport.exporters`` entry-point group) the first time a
format is looked up, so that importing caffeport stays cheap: a format that
needs TensorFlow or safetensors imports them inside its writer, not here.
Exporters never import each other.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

from caffeport.exporters.registry import EXPORTERS, Exporter, ExportOptions, register_exporter

_loaded = False


def load_exporters() -> dict[str, Exporter]:
    """All registered exporters: this package's modules and the ``caffeport.exporters`` entry points."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in pkgutil.iter_modules(__path__):
            if module.name != "registry":
                importlib.import_module(f"{__name__}.{module.name}")
        for entry in entry_points(group="caffeport.exporters"):
            entry.load()  # the module registers its format(s) with register_exporter
    return EXPORTERS


__all__ = ["EXPORTERS", "ExportOptions", "Exporter", "load_exporters", "register_exporter"]
