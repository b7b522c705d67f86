"""The ``pickle`` format: the list of layer dicts that caffe_weight_converter's ``--format pickle`` wrote.

People who used that tool (pierluigiferrari/caffe_weight_converter) have
scripts that unpickle its ``.pkl`` files, so this format keeps its layout
exactly: a list with one dict per layer of the net, in net order, layers
without weights included, each dict with the keys, in this order,

- ``name``: the layer name (str);
- ``type``: the V2 type string, e.g. ``"Convolution"`` (V1 enums are mapped,
  as Caffe's own upgrade did for that tool);
- ``weights``: a list of numpy arrays, the raw Caffe blobs, empty for a layer
  without weights;
- ``bottoms`` and ``tops``: lists of ``(blob name, shape)`` tuples, the shape a
  tuple of ints.

The blobs are what the net's backend left (the format's default, ``caffe``,
is the identity: raw Caffe layout and stored dtype, the caffemodel's bits).
The old tool got its shapes from a Caffe net that had run its setup, so it
never had an unknown shape; caffeport's shape inference may not know one (a
layer type it has no rule for), and then the shape is ``None``, never ``()``,
which is a real shape (a loss' scalar output).

Caffe 1.0 turns a prototxt's legacy net inputs (``input:`` with
``input_dim:``/``input_shape``) into a layer named ``input`` of type ``Input``
at the front of the net, and the old tool listed it. caffeport keeps such
inputs in ``Net.inputs`` instead, so a record for that layer is added here:
scripts that read the input shape from the first record keep working.

Pickle cannot stream: ``pickle.load`` builds the whole list in memory, and so
the file holds every weight of the net in one object graph. For models larger
than memory use a format written blob by blob (``keras-h5``, ``caffe``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from caffeport.exporters.registry import ExportOptions, register_exporter
from caffeport.ir import Net, Shape

#: Protocol 4, not 5: under protocol 5 numpy pickles a read-only array (every blob of a
#: memory-mapped caffemodel) so that it loads read-only, while the old tool's arrays loaded
#: writable. Protocol 4 costs one transient copy of one array at a time while writing, and loads
#: in every Python 3. Not `pickle.HIGHEST_PROTOCOL` (what the old tool used): that moves to a
#: protocol older Pythons cannot read the day a new one is added.
PICKLE_PROTOCOL = 4

#: the name and type Caffe 1.0 gives the layer it makes from legacy net inputs
LEGACY_INPUT_LAYER = ("input", "Input")

LayerRecord = dict[str, Any]


def _blob_shapes(names: list[str], shapes: list[Shape | None]) -> list[tuple[str, tuple[int, ...] | None]]:
    """(blob name, shape) pairs; shapes as tuples of Python ints, ``None`` when unknown."""
    padded = list(shapes) + [None] * (len(names) - len(shapes))
    return [(name, None if shape is None else tuple(int(d) for d in shape)) for name, shape in zip(names, padded)]


def _legacy_input_record(net: Net) -> LayerRecord | None:
    """The record of the Input layer Caffe 1.0 makes from legacy net inputs, or None when there are none.

    Caffe only makes that layer when the inputs come with dims or shapes; an
    ``input:`` without them is just dropped, and so it is here.
    """
    declared = {top for layer in net.layers if layer.type == "Input" for top in layer.tops}
    legacy = {name: shape for name, shape in net.inputs.items() if name not in declared}
    if not legacy or not any(len(shape) for shape in legacy.values()):
        return None
    name, layer_type = LEGACY_INPUT_LAYER
    return {"name": name, "type": layer_type, "weights": [], "bottoms": [],
            "tops": _blob_shapes(list(legacy), list(legacy.values()))}


def layer_records(net: Net, *, copy: bool = False) -> list[LayerRecord]:
    """The net as the old tool's list of layer dicts (see the module docstring).

    ``copy`` gives writable arrays of their own instead of the net's blobs,
    which for a caffemodel are read-only views onto its memory map: a caller
    handing the list to user code wants what the old tool gave, plain arrays
    that can be changed and that do not keep the model file open.
    """
    records: list[LayerRecord] = []
    legacy = _legacy_input_record(net)
    if legacy is not None:
        records.append(legacy)
    for layer in net.layers:
        weights = [np.array(blob) if copy else blob for blob in layer.blobs]
        records.append({
            "name": layer.name,
            "type": layer.type,
            "weights": weights,
            "bottoms": _blob_shapes(layer.bottoms, layer.bottom_shapes),
            "tops": _blob_shapes(layer.tops, layer.top_shapes),
        })
    return records


@register_exporter("pickle", suffix=".pkl", default_backend="caffe",
                   description="caffe_weight_converter's pickle: a list of layer dicts with numpy weights")
def write_pickle(net: Net, path: Path, options: ExportOptions) -> None:
    """Write every layer, with or without weights, whatever ``options`` say: the old format always did."""
    with open(path, "wb") as handle:
        pickle.dump(layer_records(net), handle, protocol=PICKLE_PROTOCOL)
