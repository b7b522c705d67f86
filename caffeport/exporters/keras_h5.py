"""Keras 2 legacy HDF5 weights, the file both Keras 3 and tf_keras load with ``load_weights(path, by_name=True)``.

Layout (measured with both loaders, Keras 3 and tf_keras):
root attributes ``layer_names``, ``backend`` and ``keras_version`` (a 2.x
value: tf_keras takes a missing one for Keras 1 and silently swaps
Conv2DTranspose axes); one group per layer with attribute ``weight_names``
listing datasets ``<layer>/<weight>:0`` in the Keras layer's own order, which
is the order loaders assign by. Weights are written as float32, Keras'
variable dtype. A ``caffeport`` root attribute holds JSON metadata (source,
backend, BatchNorm eps values, name map) for tools and for `caffeport check`.

A list attribute (``layer_names``, a layer's ``weight_names``) is stored as
variable-length strings, 16 bytes each in the HDF5 object header, whose
messages cannot exceed 64 KiB: past about 4,000 weighted layers the list is
split the way Keras splits it (``save_attributes_to_hdf5_group``) into
``layer_names0``, ``layer_names1``, ..., which Keras' and tf_keras'
``load_attributes_from_hdf5_group`` join back (as `caffeport check` does).
Two layers that would share one group are refused by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from caffeport.exporters.registry import (
    KERAS_BACKENDS,
    RAW_BACKENDS,
    EpsTarget,
    ExportOptions,
    conversion_metadata,
    file_safe_names,
    refuse_same_name,
    register_exporter,
)
from caffeport.exporters.stored import blob_names
from caffeport.io.output import interruption
from caffeport.ir import Conversion, Layer, Net
from caffeport.streaming.blocks import Blob, Progress, iter_placed, stream_placed

KERAS_VERSION = "2.15.0"
#: names per attribute of a list split as Keras splits it: 16 bytes each in the object header, 32 KiB in all, half
if TYPE_CHECKING:
    import h5py

#: of HDF5's 64 KiB message limit (an attribute of 4,095 names fails, measured with HDF5 1.14)
NAMES_PER_ATTRIBUTE = 2048
#: how HDF5 reports a failed system call inside an h5py error's text
_HDF5_ERRNO = re.compile(r"errno = (\d+), error message = '([^']*)'")


def _strings(values: list[str]) -> np.ndarray:
    import h5py

    return np.array([v.encode("utf-8") for v in values], dtype=h5py.string_dtype("utf-8", None)) if values else \
        np.array([], dtype="S1")


def write_names_attribute(attrs: h5py.AttributeManager, name: str, values: list[str]) -> None:
    """``attrs[name] = values``, split into ``name0``, ``name1``, ... when one attribute could not hold them.

    Keras' ``load_attributes_from_hdf5_group`` reads ``name`` when it is
    there, else ``name0``, ``name1``, ... until one is missing: the layout its
    ``save_attributes_to_hdf5_group`` writes for a list too large for one
    object header message.
    """
    if len(values) <= NAMES_PER_ATTRIBUTE:
        attrs[name] = _strings(values)
        return
    for index, start in enumerate(range(0, len(values), NAMES_PER_ATTRIBUTE)):
        attrs[f"{name}{index}"] = _strings(values[start:start + NAMES_PER_ATTRIBUTE])


@contextlib.contextmanager
def _system_errors(path: Path) -> Iterator[None]:
    """An h5py error caused by a failed write (a full disk, ``ulimit -f``) as the ``OSError`` it was.

    HDF5 reports those as ValueError, RuntimeError or errno-less OSError
    whose text holds ``errno = 28, error message = '...'``; as an OSError
    naming ``path`` `caffeport.io.output.atomic_output` reports it as the
    output's write error, like every other format's. An error h5py raised
    while a Ctrl-C unwound through it (closing a file the interrupt left
    half-made) is that interrupt again (`caffeport.io.output.interruption`): the
    user pressed Ctrl-C, nothing failed.
    """
    try:
        yield
    except (OSError, ValueError, RuntimeError) as exc:
        interrupted = interruption(exc)
        if interrupted is not None:
            raise interrupted from None
        match = _HDF5_ERRNO.search(str(exc))
        if match is None or int(match[1]) == 0:
            raise
        raise OSError(int(match[1]), os.strerror(int(match[1])), os.fspath(path)) from exc


def _group_names(net: Net, options: ExportOptions) -> list[tuple[Layer, str]]:
    """(layer, HDF5 group name) of every exported layer; refuses two layers that would share one group.

    Caffe allows two layers of one name, and a backend's split layers
    (``emb_bias`` for the bias of an Embed ``emb``) can meet a real layer
    of that name: a by-name file can hold only one of them.
    """
    safe = file_safe_names(net)
    owners: dict[str, Layer] = {}
    groups: list[tuple[Layer, str]] = []
    for layer in net.layers:
        if not _exported(layer, options):
            continue
        name = safe[layer.name]
        if name in owners:
            raise refuse_same_name(owners[name], layer, f"the HDF5 group {name!r}")
        owners[name] = layer
        groups.append((layer, name))
    return groups


def _exported(layer: Layer, options: ExportOptions) -> bool:
    if layer.type == "FusedScale":
        return False  # its weights live in the BatchNorm group; no Keras layer of its own
    return bool(layer.blobs) or options.include_weightless


@register_exporter("keras-h5",
                   eps=EpsTarget("Keras", "BatchNormalization(epsilon=...)", 1e-3,
                                 "the file's 'caffeport' attribute, batchnorm_eps"),
                   suffix=".h5", default_backend="tensorflow", backends=(*KERAS_BACKENDS, *RAW_BACKENDS),
                   description="Keras 2 HDF5 weights for load_weights(path, by_name=True) (Keras 3 and tf_keras)")
def write_keras_h5(net: Net, path: Path, options: ExportOptions) -> None:
    """Write the structure with h5py, then stream the weights into their places.

    Datasets are created contiguous, allocated at once and never filled, so
    each has a fixed byte range in the file before any weight is written; the
    weights are then copied there block by block (`caffeport.streaming.blocks`), with
    the model's pages released as they are used. Memory stays bounded by the
    block size whatever the model size, and HDF5's per-write overhead is paid
    once per dataset, not per block.
    """
    names: list[str] = []
    placed: list[tuple[int, Blob, int]] = []
    import h5py  # (here, not at start-up: h5py's import costs every other format about 25 ms)

    groups = _group_names(net, options)
    with _system_errors(path), h5py.File(path, "w") as f:
        for layer, layer_name in groups:
            group = f.create_group(layer_name)
            full_names = [f"{layer_name}/{w}:0" for w in blob_names(layer)]
            for name, blob in zip(full_names, layer.blobs):
                dataset = group.create_dataset(name, shape=blob.shape, dtype="<f4", dcpl=_contiguous_unfilled())
                offset = dataset.id.get_offset()
                if offset is not None:
                    placed.append((offset, blob, len(names)))
                elif blob.size:  # HDF5 keeps some tiny (scalar) datasets without a byte range of their own
                    dataset[...] = np.asarray(blob, dtype="<f4")
            write_names_attribute(group.attrs, "weight_names", full_names)
            names.append(layer_name)
        write_names_attribute(f.attrs, "layer_names", names)
        f.attrs["backend"] = keras_backend_attribute(net.conversion).encode()
        f.attrs["keras_version"] = KERAS_VERSION.encode()
        f.attrs["caffeport"] = json.dumps(conversion_metadata(net), sort_keys=True)
    runs = ((offset + 4 * start, run, index) for index, (offset, blob, _) in enumerate(placed)
            for start, run in iter_placed(blob, dtype="<f4", release_source=True))
    progress = Progress(options.progress, sum(4 * blob.size for _, blob, _ in placed), len(placed))
    with open(path, "r+b") as raw:
        stream_placed(raw.fileno(), runs, progress.on_batch)


def keras_backend_attribute(conversion: Conversion) -> str:
    """The file's ``backend`` attribute, from what the transforms did rather than from the backend's name.

    Keras 2 (and tf_keras) loading a file whose ``backend`` differs from
    its own rotates every convolution kernel when exactly one of the two is
    ``theano`` (``preprocess_weights_for_loading``): the attribute says how
    the kernels are laid out, so it is ``theano`` exactly when they were
    flipped for Theano's true convolution (`Conversion.kernels_flipped`), by
    whichever backend did it. Otherwise the kernels cross-correlate as
    TensorFlow's do; ``cntk`` (the same layout, the label the original
    caffe_weight_converter wrote for it) is kept for the backend of that name.
    """
    if conversion.kernels_flipped:
        return "theano"
    return "cntk" if conversion.backend == "cntk" else "tensorflow"


def _contiguous_unfilled() -> h5py.h5p.PropDCID:
    import h5py

    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl

