"""Blobs checked against the layer that reads them, as Caffe's ``Net::CopyTrainedLayersFrom`` checks them.

Caffe refuses a weights file whose layer has a different number of blobs
than the layer's ``LayerSetUp`` creates ("Incompatible number of blobs"), or
a blob whose shape differs (``Blob::ShapeEquals``: exact, except that a blob
stored with legacy num/channels/height/width dims is compared as the 4-D shape
padded with leading 1s). caffeport merges by name as Caffe does, so a prototxt
of a sibling model, a wrong ``num_output`` or ``group``, or a weightless type
over a weighted layer would otherwise convert without a word.

Each type states its expected blobs (`LayerType.blob_shapes`); a ``None`` dim
is one that the known shapes do not decide, and is not compared.
"""

from __future__ import annotations

from caffeport.errors import CaffeportError, ModelStructureError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers.registry import LAYER_TYPES, BlobShape, layer_type

__all__ = ["blob_problems", "check_net", "layer_blob_problem"]


def _text(shape: BlobShape | Shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) if shape else "() (0-D)"


def _fits(found: Shape, expected: BlobShape) -> bool:
    def same(a: Shape, b: BlobShape) -> bool:
        return len(a) == len(b) and all(e is None or f == e for f, e in zip(a, b, strict=True))

    if same(found, expected):
        return True
    # legacy 4-D dims: Caffe compares LegacyShape, the shape padded to 4 axes with leading 1s
    return len(found) == 4 and len(expected) <= 4 and same(found, (1,) * (4 - len(expected)) + tuple(expected))


def layer_blob_problem(layer: Layer) -> str | None:
    """What is wrong with ``layer``'s blobs for its type and params (``None`` when they fit or are not known)."""
    if not layer.blobs:
        return None
    if layer.type not in LAYER_TYPES:
        return None  # a type caffeport does not know (a Python layer, a fork's): its blobs pass unchecked
    kind = layer_type(layer.type)
    try:
        expected = kind.blob_shapes(layer, list(layer.bottom_shapes) or [None] * len(layer.bottoms))
    except CaffeportError as exc:  # params that cannot describe the blobs: the shape rule says why
        return f"its parameters cannot describe its blobs ({exc.message})"
    if expected is None:
        return None
    found = [tuple(int(d) for d in blob.shape) for blob in layer.blobs]
    if not expected:
        return (f"{layer.type} has no learned blobs, but the weights give it {len(found)} "
                f"({', '.join(_text(s) for s in found)}): the prototxt's layer does not match these weights")
    if len(found) != len(expected):
        return (f"{layer.type} needs {len(expected)} blob(s) ({', '.join(_text(s) for s in expected)}) for its "
                f"parameters, the weights have {len(found)} ({', '.join(_text(s) for s in found)})")
    for index, (shape, want) in enumerate(zip(found, expected, strict=True)):
        if not _fits(shape, want):
            return (f"blob {index} is {_text(shape)} but {layer.type} needs {_text(want)} for its parameters and "
                    "input shape")
    return None


def blob_problems(net: Net) -> dict[str, str]:
    """Layer name -> what is wrong with its blobs, for every layer whose blobs Caffe would refuse."""
    problems = {}
    for layer in net.layers:
        problem = layer_blob_problem(layer)
        if problem is not None:
            problems[layer.name] = problem
    return problems


def check_net(net: Net) -> None:
    """Raise one `ModelStructureError` listing every layer whose blobs do not fit it (Caffe would refuse them all)."""
    problems = blob_problems(net)
    if not problems:
        return
    items = list(problems.items())
    if len(items) == 1:
        name, problem = items[0]
        raise ModelStructureError(problem, path=net.caffemodel_path, layer=name)
    raise ModelStructureError(
        f"{len(items)} layers' weights do not fit them, as Caffe would refuse: "
        + "; ".join(f"layer {name!r}: {problem}" for name, problem in items),
        path=net.caffemodel_path,
    )
