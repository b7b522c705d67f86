"""Reading Caffe parameter values the way Caffe's layers do: repeated fields, axes, required sizes.

A hand-written or forked prototxt can hold anything, so each helper tolerates
the shapes a value arrives in (a scalar where a repeated field is expected, a
``BlobShape`` dict or a plain list) and raises `ShapeInferenceError` naming the
layer where Caffe would fail a ``CHECK``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Shape


def error(layer: Layer, message: str) -> ShapeInferenceError:
    return ShapeInferenceError(message, layer=layer.name)


def ints(value: Any) -> list[int]:
    """A repeated field as ints; a scalar or ``None`` is tolerated for hand-built params."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def floats(value: Any) -> list[float]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def enum_name(value: Any, numbers: Mapping[int, str], default: str) -> str:
    """An enum field as its upper-case name, from the name or Caffe's enum number; ``default`` when absent.

    The readers give names; hand-built params and some forks' converters give numbers.
    An unknown number comes back as its digits, for the caller's own "unknown value" message.
    """
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return numbers.get(value, str(value))
    return str(value).upper()


def proto_shape(value: Any) -> Shape:
    """A ``BlobShape`` (``{"dim": [...]}``) or a plain list of dims as a tuple."""
    dims = value.get("dim", []) if isinstance(value, dict) else value
    return tuple(ints(dims))


def shape_list(value: Any) -> list[Any]:
    """A repeated ``BlobShape`` field; a single dict is taken as a list of one."""
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


def axis_index(layer: Layer, axis: Any, ndim: int, what: str = "axis") -> int:
    """Caffe's ``CanonicalAxisIndex``: negatives count from the end, out of range is an error."""
    index = int(axis)
    if not -ndim <= index < ndim:
        raise error(layer, f"{what} {index} is out of range for a {ndim}-D input")
    return index + ndim if index < 0 else index


def positive(layer: Layer, param: dict[str, Any], key: str, param_name: str) -> int:
    """A required positive field (``num_output``): Caffe ``CHECK``s these before shaping."""
    value = param.get(key)
    if value is None:
        raise error(layer, f"{param_name} has no {key}")
    if int(value) <= 0:
        raise error(layer, f"{param_name}.{key} must be positive, got {value}")
    return int(value)


def same_shapes(layer: Layer, shapes: Sequence[Shape], what: str) -> Shape:
    """The one shape all bottoms share; Caffe rejects differing ones for ``what``."""
    for name, shape in zip(layer.bottoms[1:], shapes[1:], strict=False):
        if shape != shapes[0]:
            raise error(
                layer,
                f"{what} bottoms must have the same shape: {layer.bottoms[0]!r} is {shapes[0]}, "
                f"{name!r} is {shape}",
            )
    return shapes[0]


def legacy_hw(shape: Shape) -> tuple[int, int]:
    """``Blob::height()``/``width()``: axes 2 and 3, 1 where the blob has fewer than 4 axes."""
    padded = (*shape, 1, 1, 1, 1)
    return padded[2], padded[3]


def channels(shape: Shape | None) -> int | None:
    """``Blob::channels()`` of a known shape (axis 1, or 1 for a blob of fewer axes); ``None`` when unknown."""
    if shape is None:
        return None
    return shape[1] if len(shape) > 1 else 1
