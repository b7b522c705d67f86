"""Exporters: one module per output format, registered by name (`EXPORTERS`).

Exporters never import each other; `caffeport.convert` picks one by name.
"""

from caffeport.exporters import keras_h5
from caffeport.exporters.registry import EXPORTERS, Exporter, ExportOptions, register_exporter

_ = keras_h5  # registers "keras-h5"

__all__ = ["EXPORTERS", "ExportOptions", "Exporter", "register_exporter"]
