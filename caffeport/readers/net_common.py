"""What the binary and the text reader both do with a NetParameter once its fields are decoded.

A net's declared inputs (``input`` with ``input_dim``/``input_shape``, and
``Input`` layers), the V2 type names of V1 layers, the warning for layer
names used twice and what one layer costs against the object budget are the
same whether the net came from a caffemodel or a prototxt. They live here,
below both readers, so that neither format reader imports the other (the
layering in `caffeport`'s docstring, enforced by ``tests/test_layering.py``).
"""

from __future__ import annotations

from caffeport.codec import caffe_schema
from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net, Shape
from caffeport.readers.blob_proto import MAX_AXES

#: what one layer counts against the reader's object budget (the Layer, its lists and dicts)
LAYER_COST = 16


def name_list(names: list[str], noun: str, shown: int = 3) -> str:
    """``layer 'a'``, ``layers 'a' and 'b'``, ``layers 'a', 'b', 'c' and 73 more``: a list of names kept to one line."""
    quoted = [repr(name) for name in names[:shown]]
    if len(names) == 1:
        return f"{noun} {quoted[0]}"
    if len(names) <= shown:
        return f"{noun}s {', '.join(quoted[:-1])} and {quoted[-1]}"
    return f"{noun}s {', '.join(quoted)} and {len(names) - shown} more"


def warn_duplicate_names(net: Net) -> None:
    """A warning for each layer name used more than once (Caffe allows it; matching by name then takes the last)."""
    counts: dict[str, int] = {}
    for layer in net.layers:
        counts[layer.name] = counts.get(layer.name, 0) + 1
    duplicated = [(name, n) for name, n in counts.items() if n > 1]
    for name, n in duplicated[:20]:
        net.warnings.append(f"{n} layers are named {name!r}: weights are matched by name, so only one can get them")
    if len(duplicated) > 20:
        net.warnings.append(f"... and {len(duplicated) - 20} more layer names used more than once")


def v1_type_name(value: int | str | None) -> str:
    """The V2 type string of a V1 layer type (enum number from binary, enum name from text)."""
    if value is None:
        return "NONE"
    if isinstance(value, str):
        number = caffe_schema.V1_TYPE_NUMBERS.get(value)
        return caffe_schema.V1_LAYER_TYPES.get(number, value) if number is not None else value
    return caffe_schema.V1_LAYER_TYPES.get(value, f"V1_TYPE_{value}")


def legacy_net_inputs(
    names: list[str], dims: list[int], shapes: list[Shape], path: str | None
) -> dict[str, Shape]:
    """The net inputs declared with NetParameter's ``input`` + ``input_dim``/``input_shape``.

    Caffe takes four ``input_dim`` values per input, or one ``input_shape`` per
    input; anything else is a malformed net.
    """
    if not names:
        return {}
    if shapes:
        if len(shapes) != len(names):
            raise ModelStructureError(f"{len(names)} net inputs but {len(shapes)} input_shape entries", path=path)
        for name, shape in zip(names, shapes):
            _check_axes(shape, f"net input {name!r}", path, None)
        return dict(zip(names, shapes))
    if dims:
        if len(dims) != 4 * len(names):
            raise ModelStructureError(
                f"{len(names)} net inputs need {4 * len(names)} input_dim values, found {len(dims)}", path=path
            )
        return {name: tuple(dims[4 * i : 4 * i + 4]) for i, name in enumerate(names)}
    return {name: () for name in names}


def _check_axes(shape: Shape, what: str, path: str | None, layer: str | None) -> None:
    """Caffe refuses a blob of more than `MAX_AXES` axes; so do we, before shapes are inferred from it."""
    if len(shape) > MAX_AXES:
        raise ModelStructureError(f"{what} has a shape of {len(shape):,} axes; Caffe allows at most {MAX_AXES}",
                                  path=path, layer=layer)


def input_layer_shapes(layers: list[Layer], path: str | None = None) -> dict[str, Shape]:
    """Shapes declared by ``Input`` layers: one ``shape`` per top, or one shared by all tops."""
    found: dict[str, Shape] = {}
    for layer in layers:
        if layer.type != "Input":
            continue
        shapes = layer.param("input_param").get("shape", [])
        for i, top in enumerate(layer.tops):
            if not shapes:
                continue
            shape = shapes[i] if len(shapes) > 1 and i < len(shapes) else shapes[0]
            found[top] = tuple(int(d) for d in shape.get("dim", []))
            _check_axes(found[top], f"input {top!r}", path, layer.name)
    return found
