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

from caffeport.exporters.registry import EXPORTERS, Exporter, ExportOptions, register_exporter

_loaded_ours = False
_loaded_plugins = False


def load_exporters(name: str | None = None) -> dict[str, Exporter]:
    """The registered exporters: this package's modules and the ``caffeport.exporters`` entry points.

    Given the ``name`` of one of this package's formats, installed packages
    are not searched for plugins: reading every distribution's entry points
    costs about 30 ms, a tenth of a conversion's start-up.
    """
    global _loaded_ours, _loaded_plugins
    if not _loaded_ours:
        _loaded_ours = True
        for module in pkgutil.iter_modules(__path__):
            if module.name != "registry":
                importlib.import_module(f"{__name__}.{module.name}")
    if not _loaded_plugins and (name is None or name not in EXPORTERS):
        _loaded_plugins = True
        from importlib.metadata import entry_points

        for entry in entry_points(group="caffeport.exporters"):
            entry.load()  # the module registers its format(s) with register_exporter
    return EXPORTERS


__all__ = ["EXPORTERS", "ExportOptions", "Exporter", "load_exporters", "register_exporter"]
