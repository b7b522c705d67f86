"""Static shape inference over a `Net`, restating Caffe's own ``Reshape`` rules.

Exporters need every blob's shape before any data flows (an InnerProduct after
a convolution flattens C*H*W, a Keras model needs its input sizes), and a
converted model is only trustworthy if the shapes we compute are the ones Caffe
would. So each rule below restates one layer type's ``Reshape`` arithmetic from
BVLC Caffe (the SSD fork for Permute, PriorBox, Normalize), rounding quirks
included, and raises `ShapeInferenceError` where Caffe would abort on a
``CHECK``.

Rules are small functions registered per type string with `shape_rule`, in the
style of onnx2torch's converter registry. A type without a rule (Python layers,
exotic forks) gets unknown (``None``) top shapes, so one unsupported layer never
stops inference for the rest of the net; only its consumers become unknown.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Net, Shape

__all__ = ["RULES", "Rule", "infer_shapes", "shape_rule"]

#: what a rule returns: one entry per top, ``None`` where the rule cannot know
Tops = list[Shape | None]
RuleFn = Callable[[Layer, list[Shape]], Tops]


@dataclass(frozen=True)
class Rule:
    """A registered rule and how many leading bottoms it reads.

    Declaring the bottoms up front lets `infer_shapes` do the two checks every
    rule would otherwise repeat: the layer has enough bottoms (else an error) and
    their shapes are known (else the tops are unknown and the rule is not run).
    """

    infer: RuleFn
    #: leading bottoms the rule reads; ``None`` means all of them (at least one)
    bottoms: int | None


#: layer type string -> its rule
RULES: dict[str, Rule] = {}


def shape_rule(*types: str, bottoms: int | None = 1) -> Callable[[RuleFn], RuleFn]:
    """Register the decorated function as the shape rule of each of ``types``.

    The function gets the layer and the (known) shapes of its first ``bottoms``
    bottoms and returns one shape per top; a shorter list leaves the rest unknown.
    """

    def register(fn: RuleFn) -> RuleFn:
        for layer_type in types:
            if layer_type in RULES:
                raise ValueError(f"shape rule for {layer_type!r} registered twice")
            RULES[layer_type] = Rule(fn, bottoms)
        return fn

    return register


def infer_shapes(net: Net, *, strict: bool = False) -> Net:
    """Fill ``bottom_shapes``/``top_shapes`` of every layer in place and return ``net``.

    Layers are walked in file order (Caffe's own order, so every bottom is
    produced before it is used), tracking blob name -> current shape; in-place
    layers simply overwrite their blob's entry. ``net.inputs`` seeds the map and
    also wins over what a source layer (one without bottoms, e.g. ``Input``)
    declares, so a caller can change the batch or image size by editing
    ``net.inputs`` alone.

    A rule that finds the inputs inconsistent raises `ShapeInferenceError`; with
    ``strict=False`` (the default) the message goes to ``net.warnings`` instead
    and that layer's tops become unknown, because a partly shaped net is still
    useful to inspect and export.
    """
    inputs: dict[str, Shape] = {name: tuple(int(d) for d in shape) for name, shape in net.inputs.items()}
    known = dict(inputs)
    for layer in net.layers:
        layer.bottom_shapes = [known.get(name) for name in layer.bottoms]
        try:
            tops = _run_rule(layer)
        except ShapeInferenceError as error:
            if strict:
                raise
            net.warnings.append(f"layer {layer.name!r}: {error.message}")
            tops = [None] * len(layer.tops)
        if not layer.bottoms:
            tops = [inputs.get(name, shape) for name, shape in zip(layer.tops, tops, strict=True)]
        layer.top_shapes = tops
        for name, shape in zip(layer.tops, tops, strict=True):
            if shape is None:
                known.pop(name, None)
            else:
                known[name] = shape
    return net


def _run_rule(layer: Layer) -> Tops:
    """The layer's top shapes from its rule, padded with ``None`` to one per top."""
    unknown: Tops = [None] * len(layer.tops)
    rule = RULES.get(layer.type)
    if rule is None:
        return unknown
    needed = len(layer.bottoms) if rule.bottoms is None else rule.bottoms
    minimum = 1 if rule.bottoms is None else rule.bottoms
    if len(layer.bottoms) < minimum:
        raise _error(layer, f"{layer.type} needs at least {minimum} bottom(s), got {len(layer.bottoms)}")
    shapes = [shape for shape in layer.bottom_shapes[:needed] if shape is not None]
    if len(shapes) < needed:
        return unknown
    try:
        tops = rule.infer(layer, shapes)
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
        # A hand-written or forked prototxt can hold anything; report it like any
        # other bad input rather than crash the whole run with a traceback.
        raise _error(layer, f"cannot read {layer.type} parameters ({type(exc).__name__}: {exc})") from exc
    return (list(tops) + unknown)[: len(layer.tops)]


# --------------------------------------------------------------------------- helpers


def _error(layer: Layer, message: str) -> ShapeInferenceError:
    return ShapeInferenceError(message, layer=layer.name)


def _ints(value: Any) -> list[int]:
    """A repeated field as ints; a scalar or ``None`` is tolerated for hand-built params."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _floats(value: Any) -> list[float]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)]


def _proto_shape(value: Any) -> Shape:
    """A ``BlobShape`` (``{"dim": [...]}``) or a plain list of dims as a tuple."""
    dims = value.get("dim", []) if isinstance(value, dict) else value
    return tuple(_ints(dims))


def _shape_list(value: Any) -> list[Any]:
    """A repeated ``BlobShape`` field; a single dict is taken as a list of one."""
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


def _axis(layer: Layer, axis: Any, ndim: int, what: str = "axis") -> int:
    """Caffe's ``CanonicalAxisIndex``: negatives count from the end, out of range is an error."""
    index = int(axis)
    if not -ndim <= index < ndim:
        raise _error(layer, f"{what} {index} is out of range for a {ndim}-D input")
    return index + ndim if index < 0 else index


def _positive(layer: Layer, param: dict[str, Any], key: str, param_name: str) -> int:
    """A required positive field (``num_output``): Caffe ``CHECK``s these before shaping."""
    value = param.get(key)
    if value is None:
        raise _error(layer, f"{param_name} has no {key}")
    if int(value) <= 0:
        raise _error(layer, f"{param_name}.{key} must be positive, got {value}")
    return int(value)


def _same_shapes(layer: Layer, shapes: Sequence[Shape], what: str) -> Shape:
    """The one shape all bottoms share; Caffe rejects differing ones for ``what``."""
    for name, shape in zip(layer.bottoms[1:], shapes[1:], strict=True):
        if shape != shapes[0]:
            raise _error(
                layer,
                f"{what} bottoms must have the same shape: {layer.bottoms[0]!r} is {shapes[0]}, "
                f"{name!r} is {shape}",
            )
    return shapes[0]


def _legacy_hw(shape: Shape) -> tuple[int, int]:
    """``Blob::height()``/``width()``: axes 2 and 3, 1 where the blob has fewer than 4 axes."""
    padded = (*shape, 1, 1, 1, 1)
    return padded[2], padded[3]


# --------------------------------------------------------------------------- sources


@shape_rule("Input", bottoms=0)
def _input(layer: Layer, bottoms: list[Shape]) -> Tops:
    """``input_param.shape``: one per top, or a single one shared by all tops."""
    shapes = _shape_list(layer.param("input_param").get("shape"))
    if not shapes:
        return []
    if len(shapes) not in (1, len(layer.tops)):
        raise _error(layer, f"input_param has {len(shapes)} shapes for {len(layer.tops)} tops")
    return [_proto_shape(shapes[0 if len(shapes) == 1 else i]) for i in range(len(layer.tops))]


@shape_rule("DummyData", bottoms=0)
def _dummy_data(layer: Layer, bottoms: list[Shape]) -> Tops:
    """``shape`` (once or per top), or the legacy per-top ``num``/``channels``/``height``/``width``."""
    p = layer.param("dummy_data_param")
    count = len(layer.tops)
    legacy = [_ints(p.get(key)) for key in ("num", "channels", "height", "width")]
    if any(legacy):
        if any(len(values) not in (1, count) for values in legacy):
            raise _error(layer, f"legacy dims must be given once or once per top ({count} tops)")
        return [tuple(values[0 if len(values) == 1 else i] for values in legacy) for i in range(count)]
    shapes = _shape_list(p.get("shape"))
    if len(shapes) not in (1, count):
        raise _error(layer, f"dummy_data_param has {len(shapes)} shapes for {count} tops")
    return [_proto_shape(shapes[0 if len(shapes) == 1 else i]) for i in range(count)]


@shape_rule("MemoryData", bottoms=0)
def _memory_data(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Data is (batch_size, channels, height, width), labels are (batch_size,)."""
    p = layer.param("memory_data_param")
    dims = tuple(int(p.get(key, 0)) for key in ("batch_size", "channels", "height", "width"))
    if math.prod(dims) <= 0:
        raise _error(layer, f"memory_data_param batch_size/channels/height/width not all positive: {dims}")
    return [dims, (dims[0],)]


_DATA_LAYERS = ("Data", "ImageData", "HDF5Data", "AnnotatedData", "WindowData", "VideoData")


@shape_rule(*_DATA_LAYERS, "DetectionOutput", bottoms=0)
def _unknown(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Shapes that depend on files read at run time, or on how many detections survive."""
    return []


# --------------------------------------------------------------------------- convolution & pooling


def _per_axis(
    layer: Layer, p: dict[str, Any], field: str, prefix: str | None, n: int, default: int
) -> list[int]:
    """A conv window field per spatial axis: once for all axes or once per axis, ``<prefix>_h/_w`` win."""
    values = _ints(p.get(field))
    if len(values) not in (0, 1, n):
        raise _error(layer, f"{field} given {len(values)} times for {n} spatial axes")
    result = values * n if len(values) == 1 else values or [default] * n
    if prefix is not None and (f"{prefix}_h" in p or f"{prefix}_w" in p):
        if n != 2:
            raise _error(layer, f"{prefix}_h/{prefix}_w need 2 spatial axes, the input has {n}")
        result = [int(p.get(f"{prefix}_h", result[0])), int(p.get(f"{prefix}_w", result[1]))]
    return result


@dataclass(frozen=True)
class Window:
    """A convolution or pooling window per spatial axis, resolved from Caffe's many spellings."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]


def conv_window(layer: Layer, n: int = 2) -> Window:
    """The window of a Convolution/Deconvolution over ``n`` spatial axes.

    ``kernel_size``/``pad``/``stride``/``dilation`` are given once for all axes
    or once per axis; ``kernel_h``/``kernel_w`` (and the pad/stride pairs) win
    when present. Raises `ShapeInferenceError` naming the layer when the
    parameters cannot describe a window.
    """
    p = layer.param("convolution_param")
    if not _ints(p.get("kernel_size")) and "kernel_h" not in p and "kernel_w" not in p:
        raise _error(layer, "convolution_param has no kernel_size (or kernel_h/kernel_w)")
    kernel = _per_axis(layer, p, "kernel_size", "kernel", n, 0)
    pad = _per_axis(layer, p, "pad", "pad", n, 0)
    stride = _per_axis(layer, p, "stride", "stride", n, 1)
    dilation = _per_axis(layer, p, "dilation", None, n, 1)
    if any(k <= 0 for k in kernel) or any(s <= 0 for s in stride) or any(d <= 0 for d in dilation):
        raise _error(layer, f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    return Window(tuple(kernel), tuple(stride), tuple(pad), tuple(dilation))


def pool_window(layer: Layer) -> Window:
    """The 2-D window of a (non-global) Pooling layer; dilation is always 1."""
    p = layer.param("pooling_param")
    kh, kw = _pool_pair(layer, p, "kernel_size", "kernel", None)
    ph, pw = _pool_pair(layer, p, "pad", "pad", 0)
    sh, sw = _pool_pair(layer, p, "stride", "stride", 1)
    return Window((kh, kw), (sh, sw), (ph, pw), (1, 1))


@shape_rule("Convolution", "Deconvolution", "ConvolutionDepthwise", "DepthwiseConvolution", bottoms=None)
def _convolution(layer: Layer, bottoms: list[Shape]) -> Tops:
    """N-D over the axes after ``axis``; every bottom must share one shape and gets its own top."""
    shape = _same_shapes(layer, bottoms, layer.type)
    p = layer.param("convolution_param")
    axis = _axis(layer, p.get("axis", 1), len(shape))
    channels, spatial = shape[axis], shape[axis + 1 :]
    num_output = _positive(layer, p, "num_output", "convolution_param")
    group = int(p.get("group", 1))
    if group <= 0 or channels % group or num_output % group:
        raise _error(layer, f"group {group} must divide both channels {channels} and num_output {num_output}")
    window = conv_window(layer, len(spatial))
    out = []
    for size, k, pd, s, d in zip(spatial, window.kernel, window.pad, window.stride, window.dilation, strict=True):
        extent = d * (k - 1) + 1
        if layer.type == "Deconvolution":
            size_out = s * (size - 1) + extent - 2 * pd
        elif size + 2 * pd < extent:
            raise _error(layer, f"kernel extent {extent} is larger than the padded input {size} + 2*{pd}")
        else:
            size_out = (size + 2 * pd - extent) // s + 1
        if size_out <= 0:
            raise _error(layer, f"output size {size_out} along a spatial axis of size {size}")
        out.append(size_out)
    return [(*shape[:axis], num_output, *out)] * len(layer.tops)


def _pool_pair(
    layer: Layer, p: dict[str, Any], field: str, prefix: str, default: int | None
) -> tuple[int, int]:
    """Pooling's scalar ``field`` for both axes, ``<prefix>_h``/``_w`` overriding per axis."""
    values = _ints(p.get(field))
    base = values[0] if values else default
    h, w = p.get(f"{prefix}_h", base), p.get(f"{prefix}_w", base)
    if h is None or w is None:
        raise _error(layer, f"pooling_param has no {field} (or {prefix}_h and {prefix}_w)")
    return int(h), int(w)


def _pooled_size(layer: Layer, size: int, k: int, pad: int, stride: int, floor: bool, padded: bool) -> int:
    """Caffe's pooled extent: ceil (or floor), then drop a last window that starts in the padding.

    The drop is keyed on *any* axis having padding (``pad_h || pad_w``), as in Caffe.
    """
    if k <= 0 or stride <= 0:
        raise _error(layer, f"pooling kernel {k} and stride {stride} must be positive")
    if pad >= k:
        raise _error(layer, f"pooling pad {pad} must be smaller than the kernel {k}")
    span = size + 2 * pad - k
    if span < 0:
        raise _error(layer, f"pooling kernel {k} is larger than the padded input {size} + 2*{pad}")
    out = (span // stride if floor else -(-span // stride)) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@shape_rule("Pooling")
def _pooling(layer: Layer, bottoms: list[Shape]) -> Tops:
    """4-D only in Caffe; a second top (the MAX mask) has the output's shape."""
    shape = bottoms[0]
    if len(shape) != 4:
        raise _error(layer, f"Pooling needs a 4-D input (N, C, H, W), got {shape}")
    n, c, h, w = shape
    p = layer.param("pooling_param")
    if p.get("global_pooling", False):
        return [(n, c, 1, 1)] * len(layer.tops)
    window = pool_window(layer)
    (kh, kw), (ph, pw), (sh, sw) = window.kernel, window.pad, window.stride
    # ``ceil_mode: false`` is how some forks (and their converters) spell round_mode FLOOR.
    round_mode = str(p.get("round_mode", "CEIL")).upper()
    floor = ("ceil_mode" in p and not p["ceil_mode"]) or round_mode in ("FLOOR", "1")
    padded = bool(ph or pw)
    out_h = _pooled_size(layer, h, kh, ph, sh, floor, padded)
    out_w = _pooled_size(layer, w, kw, pw, sw, floor, padded)
    return [(n, c, out_h, out_w)] * len(layer.tops)


# --------------------------------------------------------------------------- dense & recurrent


@shape_rule("InnerProduct")
def _inner_product(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Axes from ``axis`` on collapse into one of size ``num_output``."""
    p = layer.param("inner_product_param")
    axis = _axis(layer, p.get("axis", 1), len(bottoms[0]))
    return [(*bottoms[0][:axis], _positive(layer, p, "num_output", "inner_product_param"))]


@shape_rule("Embed")
def _embed(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Each index becomes a ``num_output`` vector, appended as a new last axis."""
    return [(*bottoms[0], _positive(layer, layer.param("embed_param"), "num_output", "embed_param"))]


@shape_rule("LSTM", "RNN")
def _recurrent(layer: Layer, bottoms: list[Shape]) -> Tops:
    """x is (T, N, ...) and cont (T, N); h is (T, N, num_output), exposed states (1, N, num_output)."""
    x = bottoms[0]
    if len(layer.bottoms) < 2:
        raise _error(layer, f"{layer.type} needs bottoms x and cont, got {len(layer.bottoms)}")
    if len(x) < 2:
        raise _error(layer, f"{layer.type} input must be (T, N, ...), got {x}")
    cont = layer.bottom_shapes[1]
    if cont is not None and cont != x[:2]:
        raise _error(layer, f"cont must be (T, N) = {x[:2]}, got {cont}")
    num_output = _positive(layer, layer.param("recurrent_param"), "num_output", "recurrent_param")
    return [(*x[:2], num_output)] + [(1, x[1], num_output)] * (len(layer.tops) - 1)


# --------------------------------------------------------------------------- reshaping


@shape_rule("Flatten")
def _flatten(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Axes ``axis`` through ``end_axis`` (inclusive) merge into one."""
    shape = bottoms[0]
    p = layer.param("flatten_param")
    start = _axis(layer, p.get("axis", 1), len(shape))
    end = _axis(layer, p.get("end_axis", -1), len(shape), "end_axis")
    if end < start:
        raise _error(layer, f"end_axis {end} comes before axis {start}")
    return [(*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])]


@shape_rule("Reshape")
def _reshape(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Replace axes [axis, axis + num_axes) by ``shape``: 0 copies the bottom's dim, one -1 is inferred."""
    shape = bottoms[0]
    p = layer.param("reshape_param")
    dims = list(_proto_shape(p.get("shape", {})))
    axis, num_axes = int(p.get("axis", 0)), int(p.get("num_axes", -1))
    start = axis if axis >= 0 else len(shape) + axis + 1  # may equal ndim: insert at the end
    if not 0 <= start <= len(shape):
        raise _error(layer, f"axis {axis} is out of range for a {len(shape)}-D input")
    if num_axes < -1:
        raise _error(layer, f"num_axes must be >= 0 or -1, got {num_axes}")
    end = len(shape) if num_axes == -1 else start + num_axes
    if end > len(shape):
        raise _error(layer, f"axis + num_axes = {end} is out of range for a {len(shape)}-D input")
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise _error(layer, f"reshape_param.shape {dims} may hold only one -1 and no other negatives")
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= len(shape):
                raise _error(layer, f"shape dim {i} is 0 but the input has no axis {start + i} to copy")
            dims[i] = shape[start + i]
    top = [*shape[:start], *dims, *shape[end:]]
    total = math.prod(shape)
    if -1 in dims:
        explicit = math.prod(d for d in top if d != -1)
        if explicit == 0 or total % explicit:
            raise _error(layer, f"input count {total} is not divisible by the given dims' product {explicit}")
        top[start + dims.index(-1)] = total // explicit
    if math.prod(top) != total:
        raise _error(layer, f"output {tuple(top)} has {math.prod(top)} elements, input {shape} has {total}")
    return [tuple(top)]


@shape_rule("Permute")
def _permute(layer: Layer, bottoms: list[Shape]) -> Tops:
    """SSD's Permute: the listed ``order`` first, the unlisted axes after it in their own order."""
    shape = bottoms[0]
    order = _ints(layer.param("permute_param").get("order"))
    if len(set(order)) != len(order) or any(not 0 <= o < len(shape) for o in order):
        raise _error(layer, f"permute order {order} must be distinct axes of a {len(shape)}-D input")
    order += [i for i in range(len(shape)) if i not in order]
    return [tuple(shape[i] for i in order)]


@shape_rule("Crop", bottoms=2)
def _crop(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Axes from ``axis`` on take the reference bottom's sizes; the window must fit after ``offset``."""
    shape, reference = bottoms
    if len(shape) != len(reference):
        raise _error(layer, f"Crop bottoms must have the same number of axes: {shape} vs {reference}")
    p = layer.param("crop_param")
    axis = _axis(layer, p.get("axis", 2), len(shape))
    offsets = _ints(p.get("offset"))
    if len(offsets) > 1 and axis + len(offsets) != len(shape):
        raise _error(layer, f"{len(offsets)} offsets for the {len(shape) - axis} axes from axis {axis}")
    top = list(shape)
    for i in range(axis, len(shape)):
        offset = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - axis]
        if shape[i] - offset < reference[i]:
            raise _error(layer, f"crop {reference[i]} at offset {offset} exceeds axis {i} of size {shape[i]}")
        top[i] = reference[i]
    return [tuple(top)]


@shape_rule("Tile")
def _tile(layer: Layer, bottoms: list[Shape]) -> Tops:
    """The ``axis`` dim is repeated ``tiles`` times."""
    shape = bottoms[0]
    p = layer.param("tile_param")
    axis = _axis(layer, p.get("axis", 1), len(shape))
    tiles = _positive(layer, p, "tiles", "tile_param")
    return [(*shape[:axis], shape[axis] * tiles, *shape[axis + 1 :])]


# --------------------------------------------------------------------------- joining & splitting


@shape_rule("Concat", bottoms=None)
def _concat(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Sizes along the axis add up; every other axis must agree."""
    first = bottoms[0]
    p = layer.param("concat_param")
    if p.get("concat_dim") is not None:  # legacy field, not allowed to be negative
        axis = int(p["concat_dim"])
        if not 0 <= axis < len(first):
            raise _error(layer, f"concat_dim {axis} is out of range for a {len(first)}-D input")
    else:
        axis = _axis(layer, p.get("axis", 1), len(first))
    for name, shape in zip(layer.bottoms[1:], bottoms[1:], strict=True):
        if len(shape) != len(first) or any(shape[i] != first[i] for i in range(len(first)) if i != axis):
            raise _error(
                layer,
                f"Concat bottoms must match except along axis {axis}: "
                f"{layer.bottoms[0]!r} is {first}, {name!r} is {shape}",
            )
    return [(*first[:axis], sum(shape[axis] for shape in bottoms), *first[axis + 1 :])]


@shape_rule("Eltwise", bottoms=None)
def _eltwise(layer: Layer, bottoms: list[Shape]) -> Tops:
    return [_same_shapes(layer, bottoms, "Eltwise")]


@shape_rule("Slice")
def _slice(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Cut the axis at ``slice_point`` (one fewer than the tops), or into equal parts without it."""
    shape = bottoms[0]
    p = layer.param("slice_param")
    if p.get("slice_dim") is not None:  # legacy field, not allowed to be negative
        axis = int(p["slice_dim"])
        if not 0 <= axis < len(shape):
            raise _error(layer, f"slice_dim {axis} is out of range for a {len(shape)}-D input")
    else:
        axis = _axis(layer, p.get("axis", 1), len(shape))
    size, count = shape[axis], len(layer.tops)
    points = _ints(p.get("slice_point"))
    if points:
        if len(points) != count - 1:
            raise _error(layer, f"{len(points)} slice points for {count} tops (need {count - 1})")
        bounds = [0, *points, size]
        sizes = [b - a for a, b in itertools.pairwise(bounds)]
        if any(s <= 0 for s in sizes):
            raise _error(layer, f"slice points {points} must increase strictly within axis size {size}")
    elif count and size % count == 0:
        sizes = [size // count] * count
    else:
        raise _error(layer, f"{count} tops do not evenly divide axis {axis} of size {size}")
    return [(*shape[:axis], s, *shape[axis + 1 :]) for s in sizes]


@shape_rule("Split")
def _split(layer: Layer, bottoms: list[Shape]) -> Tops:
    return [bottoms[0]] * len(layer.tops)


@shape_rule(
    "ReLU", "ReLU6", "PReLU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL", "ELU",
    "Threshold", "Swish", "Clip", "Dropout", "BatchNorm", "Scale", "Bias", "LRN", "MVN", "Softmax",
    "Normalize",
)
def _elementwise(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Same shape out as in (Scale/Bias with a second bottom broadcast it onto the first)."""
    return [bottoms[0]]


# --------------------------------------------------------------------------- reductions & heads


@shape_rule("ArgMax")
def _argmax(layer: Layer, bottoms: list[Shape]) -> Tops:
    """With ``axis``: that axis becomes ``top_k``. Without: (N, 1 or 2, top_k, ...) over at least 3 axes."""
    shape = bottoms[0]
    p = layer.param("argmax_param")
    top_k = int(p.get("top_k", 1))
    if p.get("axis") is not None:
        axis = _axis(layer, p["axis"], len(shape))
        if not 1 <= top_k <= shape[axis]:
            raise _error(layer, f"top_k {top_k} must be in 1..{shape[axis]} (axis {axis})")
        return [(*shape[:axis], top_k, *shape[axis + 1 :])]
    if not 1 <= top_k <= math.prod(shape[1:]):
        raise _error(layer, f"top_k {top_k} must be in 1..{math.prod(shape[1:])}")
    top = [1] * max(len(shape), 3)
    top[0], top[1], top[2] = shape[0], 2 if p.get("out_max_val", False) else 1, top_k
    return [tuple(top)]


@shape_rule("Reduction")
def _reduction(layer: Layer, bottoms: list[Shape]) -> Tops:
    """All axes from ``axis`` on are reduced away."""
    axis = _axis(layer, layer.param("reduction_param").get("axis", 0), len(bottoms[0]))
    return [bottoms[0][:axis]]


@shape_rule(
    "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
    "ContrastiveLoss",
)
def _loss(layer: Layer, bottoms: list[Shape]) -> Tops:
    """Losses are 0-D blobs in Caffe."""
    return [()]


@shape_rule("SoftmaxWithLoss")
def _softmax_loss(layer: Layer, bottoms: list[Shape]) -> Tops:
    """A 0-D loss, and the softmax probabilities as an optional second top."""
    return [(), bottoms[0]]


@shape_rule("Accuracy")
def _accuracy(layer: Layer, bottoms: list[Shape]) -> Tops:
    """A 0-D accuracy, and per-class accuracies (one per label along ``axis``) as an optional second top."""
    axis = _axis(layer, layer.param("accuracy_param").get("axis", 1), len(bottoms[0]))
    return [(), (bottoms[0][axis],)]


@shape_rule("Silence", bottoms=0)
def _silence(layer: Layer, bottoms: list[Shape]) -> Tops:
    return []


@shape_rule("PriorBox")
def _prior_box(layer: Layer, bottoms: list[Shape]) -> Tops:
    """SSD: (1, 2, H*W*num_priors*4), boxes and variances for every feature-map cell.

    Per min_size there is one box per distinct aspect ratio (1 always included,
    each new ratio followed by its reciprocal when ``flip``), plus one per max_size.
    A ratio within 1e-6 of one already in the list (reciprocals included) is skipped.
    """
    p = layer.param("prior_box_param")
    min_sizes, max_sizes = _floats(p.get("min_size")), _floats(p.get("max_size"))
    if not min_sizes:
        raise _error(layer, "prior_box_param has no min_size")
    if max_sizes and (
        len(max_sizes) != len(min_sizes) or any(hi <= lo for hi, lo in zip(max_sizes, min_sizes, strict=True))
    ):
        raise _error(layer, f"max_size {max_sizes} must pair with and exceed min_size {min_sizes}")
    ratios = [1.0]
    for ratio in _floats(p.get("aspect_ratio")):
        if all(abs(ratio - r) >= 1e-6 for r in ratios):
            ratios += [ratio, 1.0 / ratio] if p.get("flip", True) else [ratio]
    num_priors = len(ratios) * len(min_sizes) + len(max_sizes)
    h, w = _legacy_hw(bottoms[0])
    return [(1, 2, h * w * num_priors * 4)]
