"""Keras 2 legacy HDF5 weights, the file both Keras 3 and tf_keras load with ``load_weights(path, by_name=True)``.

Layout (see shared/notes/keras-formats.md, measured with both loaders):
root attributes ``layer_names``, ``backend`` and ``keras_version`` (a 2.x
value: tf_keras takes a missing one for Keras 1 and silently swaps
Conv2DTranspose axes); one group per layer with attribute ``weight_names``
listing datasets ``<layer>/<weight>:0`` in the Keras layer's own order, which
is the order loaders assign by. Weights are written as float32, Keras'
variable dtype. A ``caffeport`` root attribute holds JSON metadata (source,
backend, BatchNorm eps values, name map) for tools and for `caffeport check`.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from caffeport.exporters.registry import ExportOptions, conversion_metadata, register_exporter
from caffeport.ir import Layer, Net

KERAS_VERSION = "2.15.0"
_BACKEND_ATTR = {"theano": "theano", "cntk": "cntk"}  # everything else was written for TensorFlow


def _strings(values: list[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=h5py.string_dtype("utf-8", None)) if values else \
        np.array([], dtype="S1")


def _exported(layer: Layer, options: ExportOptions) -> bool:
    if layer.type == "FusedScale":
        return False  # its weights live in the BatchNorm group; no Keras layer of its own
    return bool(layer.blobs) or options.include_weightless


@register_exporter("keras-h5", suffix=".h5", default_backend="tensorflow",
                   description="Keras 2 HDF5 weights for load_weights(path, by_name=True) (Keras 3 and tf_keras)")
def write_keras_h5(net: Net, path: Path, options: ExportOptions) -> None:
    names: list[str] = []
    with h5py.File(path, "w") as f:
        for layer in net.layers:
            if not _exported(layer, options):
                continue
            group = f.create_group(layer.name)
            weight_names = layer.weight_names or [str(i) for i in range(len(layer.blobs))]
            full_names = [f"{layer.name}/{w}:0" for w in weight_names[: len(layer.blobs)]]
            for name, blob in zip(full_names, layer.blobs):
                group.create_dataset(name, data=np.asarray(blob, dtype=np.float32))
            group.attrs["weight_names"] = _strings(full_names)
            names.append(layer.name)
        backend = str(net.metadata.get("backend", "tensorflow"))
        f.attrs["layer_names"] = _strings(names)
        f.attrs["backend"] = _BACKEND_ATTR.get(backend, "tensorflow").encode()
        f.attrs["keras_version"] = KERAS_VERSION.encode()
        f.attrs["caffeport"] = json.dumps(conversion_metadata(net), sort_keys=True)

