"""MATLAB-trained models made to take row-major images (``Options(matlab=True)``, ``caffeport convert --matlab``).

Why: MATLAB stores arrays column-major and matcaffe hands Caffe an image's
memory as it lies, so a net trained from MATLAB (MTCNN is one) saw every image
transposed: its blobs' H axis ran along the image's width. Its kernels were
learned that way, which is why ports of MTCNN swap their H and W. This pass
rewrites the net ``f`` into ``g = T . f . T``, ``T`` swapping the last two
axes of every spatial (N, C, H, W) blob. On a row-major image ``x``, ``g(x)``
is ``f`` on the transposed image ``T x`` (what MATLAB gave the net), with
every spatial blob of ``g`` the transpose of ``f``'s and every other blob
equal to ``f``'s. The result is still a Caffe-layout net (`caffeport.run`
runs it; every backend's passes run after this one), with the input's H and W
swapped: ``net.inputs`` (N, C, H, W) becomes (N, C, W, H).

What changes, and why each rule is exact (``s``, ``p``, ``d``: stride, pad, dilation):

- Convolution, DepthwiseConvolution, ConvolutionDepthwise, Deconvolution: the
  kernel (blob 0, (O, I, kh, kw) or Deconvolution's (I, O, kh, kw)) gets its
  last two axes swapped and the window fields their H and W values swapped.
  Caffe's cross-correlation is ``y[o,h,w] = sum K[o,c,i,j] x[c, h*s_h-p_h+i*d_h,
  w*s_w-p_w+j*d_w]``; with ``x' = T x``, ``K' = T K`` and the swapped fields,
  ``y'[o,a,b] = sum K[o,c,i,j] x[c, b*s_h-p_h+i*d_h, a*s_w-p_w+j*d_w] =
  y[o,b,a]``, so ``y' = T y`` (output sizes swap with them; Deconvolution is
  the same sum scattered instead of gathered).
- Pooling: the window fields swapped (``kernel_h``/``kernel_w``, ``stride_*``,
  ``pad_*``): the max or average over a window that transposes, with Caffe's
  ceil rounding and AVE divisor per axis, which swap with the fields. A mask
  top holds indices into ``g``'s own (transposed) planes, which is what an
  Upsample reading it in ``g`` needs.
- InnerProduct after a spatial blob (directly, or through Flatten/Reshape):
  ``f`` reads flat index ``i = (q*H + h)*W + w`` (``q`` the index over the
  merged axes before H, W) where ``g``'s blob holds the same value at
  ``j = (q*W + w)*H + h``. The weight's input columns are reordered so that
  ``W_g[o, (q*W + w)*H + h] = W_f[o, (q*H + h)*W + w]``, i.e. ``W_g =
  W_f.reshape(O, Q, H, W).swapaxes(-1, -2).reshape(O, Q*W*H)`` (rows instead
  of columns with ``transpose: true``). Then ``sum_j W_g[o,j] x_g[j] =
  sum_{q,h,w} W_f[o,q,h,w] b[q,h,w] = sum_i W_f[o,i] x_f[i]``: the output is
  ``f``'s, not spatial any more, and later layers need nothing.
- Axis parameters (Softmax, Concat, Slice, Tile, ArgMax, Crop offsets) naming
  H or W name the other one; Interp's ``height``/``width`` and SegNet
  Upsample's ``*_h``/``*_w`` swap; Input, DummyData and MemoryData shapes swap.
- Layers that act per element, per channel, or symmetrically in H and W
  (activations, BatchNorm, Scale/Bias per channel, PReLU, LRN, MVN,
  Normalize, Eltwise, ShuffleChannel, Dropout, Split, Reduction over both
  axes) commute with ``T`` and are left as they are. So is any layer whose
  inputs are all non-spatial blobs ``g`` computes exactly as ``f`` does.

A layer for which no such rule exists is refused, naming it (Permute, Reorg,
SPP, PriorBox, a Reshape to other spatial dims, a Crop of W alone...), as is
a net whose blob shapes are unknown (a caffemodel without its deploy
prototxt): guessing would give a model that runs and is silently wrong.
After the rewrite the shapes are inferred again and checked against ``f``'s
(transposed where spatial), so a rule that missed a case fails here, not in
the user's model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from caffeport.errors import CaffeportError
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net, Shape
from caffeport.layers.fields import axis_index, ints, shape_list
from caffeport.layers.layout import note, report_action
from caffeport.layers.scale import broadcast_shape
from caffeport.layers.shapes import infer_shapes, unknown_shape_cause
from caffeport.transforms.registry import Options, register_pass

SWAPPED_KERNEL = report_action("matlab-kernel", "kernels with H and W swapped (--matlab)")
REORDERED = report_action("matlab-reorder", "fully connected layers reordered for row-major blobs (--matlab)")
PARAMS = report_action("matlab-params", "H and W parameters swapped (--matlab)")
INPUT = report_action("matlab-input", "inputs made row-major (--matlab)")

#: the pass's name; `caffeport.transforms.registry.transform` runs it before a backend's passes when matlab is set
MATLAB_PASS = "matlab_row_major"


class MatlabLayoutError(CaffeportError):
    """A layer of the net has no row-major equivalent caffeport knows (``--matlab`` refuses it, naming it)."""


@dataclass(frozen=True)
class State:
    """How a blob of ``g`` relates to the same blob of ``f`` (see the module docstring).

    ``plain``: equal. ``swapped``: 4-D, ``g``'s is ``f``'s with H and W swapped.
    ``flat``: ``f``'s is the 4-D spatial blob ``source`` with its axes from
    ``axis`` on merged into one, and ``g``'s holds those values in (..., W, H)
    order. ``mask``: a MAX Pooling mask of indices into ``g``'s own planes.
    ``unknown``: the shape is not known.
    """

    kind: str
    source: Shape = ()
    axis: int = 0


PLAIN, SWAPPED, MASK, UNKNOWN = State("plain"), State("swapped"), State("mask"), State("unknown")

#: element-wise layers with no per-channel parameters: the top is in the bottoms' state, whatever it is
_ELEMENTWISE = frozenset({"ReLU", "ReLU6", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL", "ELU",
                          "Threshold", "Swish", "Clip", "Dropout", "Split", "Eltwise"})
#: per-channel or H/W-symmetric layers: a transposed 4-D input gives the transposed output
_COMMUTING = frozenset({"BatchNorm", "PReLU", "LRN", "MVN", "Normalize", "ShuffleChannel"})
_CONVOLUTIONS = frozenset({"Convolution", "DepthwiseConvolution", "ConvolutionDepthwise", "Deconvolution"})


def _refuse(layer: Layer, why: str) -> MatlabLayoutError:
    return MatlabLayoutError(f"--matlab: {layer.type} {why}; caffeport knows no row-major equivalent",
                             layer=layer.name)


def _swap_keys(p: dict[str, Any], first: str, second: str) -> bool:
    """Swap two optional fields (an absent one stays absent on the other side); whether anything was set."""
    a, b = p.pop(first, None), p.pop(second, None)
    if b is not None:
        p[first] = b
    if a is not None:
        p[second] = a
    return a is not None or b is not None


def _swap_pairs(p: dict[str, Any], pairs: tuple[tuple[str, str], ...]) -> bool:
    changed = False
    for first, second in pairs:
        changed = _swap_keys(p, first, second) or changed
    return changed


def _other_axis(axis: int) -> int:
    """H (2) for W (3) and back; other axes unchanged."""
    return {2: 3, 3: 2}.get(axis, axis)


# ----------------------------------------------------------------------------------------------- the rules


def _window_layer(layer: Layer, net: Net) -> None:
    """Convolutions and Pooling: H and W of the window fields swapped, and of the kernel (see the module docstring)."""
    if layer.type == "Pooling":
        changed = _swap_pairs(layer.params.setdefault("pooling_param", {}),
                              (("kernel_h", "kernel_w"), ("stride_h", "stride_w"), ("pad_h", "pad_w")))
    else:
        p = layer.params.setdefault("convolution_param", {})
        if axis_index(layer, p.get("axis", 1), 4) != 1:
            raise _refuse(layer, f"with axis {p.get('axis')} (not the channel axis)")
        changed = _swap_pairs(p, (("kernel_h", "kernel_w"), ("stride_h", "stride_w"), ("pad_h", "pad_w")))
        for key in ("kernel_size", "stride", "pad", "dilation"):
            values = ints(p.get(key))
            if len(values) == 2 and values[0] != values[1]:
                p[key] = values[::-1]
                changed = True
        if layer.blobs:
            kernel = layer.blobs[0]
            if kernel.ndim != 4:
                raise _refuse(layer, f"kernel of shape {list(kernel.shape)} (not 4-D)")
            layer.blobs[0] = np.asarray(kernel).swapaxes(2, 3)  # a view; exporters copy it
            note(net, layer, SWAPPED_KERNEL, f"{kernel.shape[2]}x{kernel.shape[3]} kernel: H and W axes swapped")
    if changed:
        note(net, layer, PARAMS, "per-axis window fields (kernel, stride, pad, dilation): H and W swapped")


def _reorder_columns(layer: Layer, net: Net, dims: Shape) -> None:
    """The InnerProduct's inputs, f's (..., H, W) = ``dims``, in g's (..., W, H) order (the module docstring's rule)."""
    blob = layer.blobs[0] if layer.blobs else None
    if blob is None:
        return
    k = math.prod(dims)
    transpose = bool(layer.param("inner_product_param").get("transpose", False))
    if blob.size % k:
        raise _refuse(layer, f"weight of shape {list(blob.shape)} does not take the {k} inputs of its bottom")
    out = blob.size // k
    weight = np.asarray(blob).reshape((k, out) if transpose else (out, k))
    if transpose:
        reordered = weight.reshape(*dims, out).swapaxes(-2, -3).reshape(k, out)
    else:
        reordered = weight.reshape(out, *dims).swapaxes(-1, -2).reshape(out, k)
    layer.blobs[0] = np.ascontiguousarray(reordered).reshape(blob.shape)
    shown = "x".join(map(str, dims))
    note(net, layer, REORDERED, f"input columns of a {shown} blob reordered from H,W to W,H order")


def _inner_product(layer: Layer, states: list[State], net: Net) -> list[State]:
    state, shape = states[0], layer.bottom_shapes[0]
    assert shape is not None
    axis = axis_index(layer, layer.param("inner_product_param").get("axis", 1), len(shape))
    if state == SWAPPED and axis <= 2:
        _reorder_columns(layer, net, tuple(shape[axis:]))
    elif state.kind == "flat" and axis <= state.axis:
        _reorder_columns(layer, net, tuple(state.source[axis:]))
    else:
        raise _refuse(layer, f"at axis {axis} reads only part of a spatial blob's H and W")
    return [PLAIN]


def _merging(layer: Layer, states: list[State]) -> list[State]:
    """Flatten and Reshape: a merge of the axes from some axis on, or no change; anything else is refused."""
    state, before, after = states[0], layer.bottom_shapes[0], layer.top_shapes[0]
    source = tuple(before) if state == SWAPPED and before is not None else state.source
    limit = 2 if state == SWAPPED else state.axis
    if after is not None and tuple(after) == source:
        return [SWAPPED]
    for axis in range(limit + 1):
        if after is not None and tuple(after) == (*source[:axis], math.prod(source[axis:])):
            return [State("flat", source, axis)]
    raise _refuse(layer, f"from {list(before or ())} to {list(after or ())} reshapes the spatial axes otherwise than "
                  "by merging them into the last axis")


def _axis_layer(layer: Layer, states: list[State], net: Net) -> list[State]:
    """Softmax, Concat, Slice, Tile, ArgMax: an axis naming H or W names the other one."""
    param, legacy = {"Softmax": ("softmax_param", None), "Concat": ("concat_param", "concat_dim"),
                     "Slice": ("slice_param", "slice_dim"), "Tile": ("tile_param", None),
                     "ArgMax": ("argmax_param", None)}[layer.type]
    p = layer.params.setdefault(param, {})
    if any(state != states[0] for state in states) or states[0].kind not in ("swapped", "flat"):
        raise _refuse(layer, "mixes spatial and other blobs")
    key = legacy if legacy is not None and p.get(legacy) is not None else "axis"
    if layer.type == "ArgMax" and p.get("axis") is None:
        raise _refuse(layer, "without an axis ranks the values of a whole C x H x W sample, whose order changes")
    axis = axis_index(layer, p.get(key, 1), len(layer.bottom_shapes[0] or ()))
    if states[0].kind == "flat":
        if layer.type != "Softmax" or axis > states[0].axis:  # softmax over a permuted axis is permuted
            raise _refuse(layer, "on a flattened spatial blob")
        return [states[0]] * len(layer.tops)
    if axis in (2, 3):
        p[key] = _other_axis(axis)
        note(net, layer, PARAMS, f"{key} {axis} -> {p[key]}")
    return [SWAPPED] * len(layer.tops)


def _crop(layer: Layer, states: list[State], net: Net) -> list[State]:
    if states[:2] != [SWAPPED, SWAPPED]:
        raise _refuse(layer, "crops a spatial blob to a blob that is not one (or the reverse)")
    p = layer.params.setdefault("crop_param", {})
    axis = axis_index(layer, p.get("axis", 2), 4)
    if axis == 3:
        raise _refuse(layer, "at axis 3 crops W alone (the row-major net would need H alone)")
    offsets = ints(p.get("offset"))
    if len(offsets) > 1 and offsets[-1] != offsets[-2]:
        p["offset"] = [*offsets[:-2], offsets[-1], offsets[-2]]
        note(net, layer, PARAMS, "offsets of H and W swapped")
    return [SWAPPED]


def _interp(layer: Layer, states: list[State], net: Net) -> list[State]:
    if any(state != SWAPPED for state in states):
        raise _refuse(layer, "resizes a blob that is not spatial, or to one")
    if _swap_keys(layer.params.setdefault("interp_param", {}), "height", "width"):
        note(net, layer, PARAMS, "height and width swapped")
    return [SWAPPED]


def _upsample(layer: Layer, states: list[State], net: Net) -> list[State]:
    if states[0] != SWAPPED or states[1:] not in ([], [MASK]):
        raise _refuse(layer, "upsamples a blob that is not spatial, or with a mask that is not a Pooling mask")
    if _swap_pairs(layer.params.setdefault("upsample_param", {}),
                   (("upsample_h", "upsample_w"), ("scale_h", "scale_w"), ("pad_out_h", "pad_out_w"))):
        note(net, layer, PARAMS, "upsample_h/w, scale_h/w and pad_out_h/w swapped")
    return [SWAPPED]


def _scale(layer: Layer, states: list[State], net: Net) -> list[State]:
    """Scale/Bias: fine when the factor spans only N and C, or is a second bottom transposed like the first."""
    p = layer.param("scale_param" if layer.type == "Scale" else "bias_param")
    if states[0] != SWAPPED:
        raise _refuse(layer, "scales a blob that is not spatial by one that is, or a flattened spatial blob")
    shape = layer.bottom_shapes[0]
    start = axis_index(layer, p.get("axis", 1), 4)
    span = len(broadcast_shape(layer, p, shape) or ()) if len(layer.bottoms) == 1 else len(layer.bottom_shapes[1] or ())
    if start + span <= 2 and states[1:] in ([], [PLAIN]):
        return [SWAPPED]
    if len(states) == 2 and states[1] == SWAPPED and start == 0:
        return [SWAPPED]
    raise _refuse(layer, f"with a factor over axes {start}..{start + span - 1} of a spatial blob")


def _reduction(layer: Layer, states: list[State], net: Net) -> list[State]:
    axis = axis_index(layer, layer.param("reduction_param").get("axis", 0), len(layer.bottom_shapes[0] or ()))
    limit = 2 if states[0] == SWAPPED else states[0].axis if states[0].kind == "flat" else -1
    if axis > limit:
        raise _refuse(layer, f"at axis {axis} reduces only part of a spatial blob's H and W")
    return [PLAIN]


def _per_layer(layer: Layer, states: list[State], net: Net) -> list[State]:
    """The top states of a layer with a spatial (or flattened, mask) bottom, after editing it as ``g`` needs."""
    kind = layer.type
    if kind in _ELEMENTWISE:
        if any(state != states[0] for state in states) or (states[0] == MASK and kind != "Split"):
            raise _refuse(layer, "mixes spatial and other blobs")
        return [states[0]] * len(layer.tops)
    if MASK in states and kind != "Upsample":
        raise _refuse(layer, "reads a Pooling mask (indices into transposed planes)")
    if kind in _COMMUTING or kind in _CONVOLUTIONS or kind == "Pooling":
        if any(state != SWAPPED for state in states):
            raise _refuse(layer, "reads a flattened spatial blob, or mixes spatial and other blobs")
        if kind not in _COMMUTING:
            _window_layer(layer, net)
        return [SWAPPED, MASK] if kind == "Pooling" and len(layer.tops) == 2 else [SWAPPED] * len(layer.tops)
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise _refuse(layer, "reads a spatial blob")
    return handler(layer, states, net)


_HANDLERS: dict[str, Callable[[Layer, list[State], Net], list[State]]] = {
    "InnerProduct": _inner_product,
    "Flatten": lambda layer, states, net: _merging(layer, states),
    "Reshape": lambda layer, states, net: _merging(layer, states),
    "Softmax": _axis_layer, "Concat": _axis_layer, "Slice": _axis_layer, "Tile": _axis_layer, "ArgMax": _axis_layer,
    "Crop": _crop, "Interp": _interp, "Upsample": _upsample, "Scale": _scale, "Bias": _scale,
    "Reduction": _reduction,
}


# ----------------------------------------------------------------------------------------------- sources and walk


def _swap_dims(shape: Any) -> Any:
    """A BlobShape dict or dim list with its 4 dims' H and W swapped (other ranks as they are)."""
    dims = ints(shape.get("dim") if isinstance(shape, dict) else shape)
    if len(dims) != 4:
        return shape
    swapped = [dims[0], dims[1], dims[3], dims[2]]
    return {**shape, "dim": swapped} if isinstance(shape, dict) else swapped


def _source(layer: Layer, net: Net) -> list[State]:
    """A layer without bottoms: its shapes swapped where they are 4-D."""
    shapes = layer.top_shapes if len(layer.top_shapes) == len(layer.tops) else [None] * len(layer.tops)
    ranks = [len(shape) if shape is not None else None for shape in shapes]
    if layer.type in ("Input", "DummyData"):
        p = layer.params.setdefault("input_param" if layer.type == "Input" else "dummy_data_param", {})
        if p.get("shape") is not None:
            p["shape"] = [_swap_dims(shape) for shape in shape_list(p["shape"])]
        _swap_keys(p, "height", "width")  # DummyData's legacy num/channels/height/width
    elif layer.type == "MemoryData":
        _swap_keys(layer.params.setdefault("memory_data_param", {}), "height", "width")
        return [SWAPPED, PLAIN][: len(layer.tops)]
    return [UNKNOWN if rank is None else SWAPPED if rank == 4 else PLAIN for rank in ranks]


def _input_state(name: str, shape: Shape) -> State:
    """A net input: 4-D is an image (swapped), 1-D or 2-D (``im_info``) is left alone, other ranks are refused."""
    if not shape:
        raise MatlabLayoutError(f"--matlab: the shape of net input {name!r} is not known (give the deploy prototxt)")
    if len(shape) == 4:
        return SWAPPED
    if len(shape) <= 2:
        return PLAIN
    raise MatlabLayoutError(f"--matlab: net input {name!r} is {len(shape)}-D; --matlab transposes (N, C, H, W) "
                            "images")


def _expected(shape: Shape | None, state: State) -> Shape | None:
    """``g``'s shape of a blob whose shape in ``f`` is ``shape``."""
    if shape is None or state != SWAPPED:
        return shape
    return (*shape[:2], shape[3], shape[2])


@register_pass(MATLAB_PASS, provides=("row_major",))
def matlab_row_major(net: Net, options: Options) -> None:
    """Rewrite the net for row-major images (see the module docstring); refuses what has no such rewrite."""
    states = {name: _input_state(name, tuple(shape)) for name, shape in net.inputs.items()}
    expected: list[list[Shape | None]] = []
    for layer in net.layers:
        if not layer.bottoms:
            tops = [states[top] if top in net.inputs else state
                    for top, state in zip(layer.tops, _source(layer, net), strict=True)]
        else:
            bottoms = [states.get(name, UNKNOWN) for name in layer.bottoms]
            if all(state == PLAIN for state in bottoms):
                tops = [PLAIN] * len(layer.tops)
            elif UNKNOWN in bottoms:
                cause = unknown_shape_cause(net, layer, bottoms.index(UNKNOWN))
                hint = "" if "prototxt" in cause else " (give the deploy prototxt)"
                raise MatlabLayoutError(f"--matlab needs every blob's shape to know which are spatial: {cause}{hint}",
                                        layer=layer.name)
            else:
                tops = _per_layer(layer, bottoms, net)
        shapes = layer.top_shapes if len(layer.top_shapes) == len(layer.tops) else [None] * len(layer.tops)
        expected.append([_expected(shape, state) for shape, state in zip(shapes, tops, strict=True)])
        states.update(zip(layer.tops, tops, strict=True))
    for name in net_outputs(net):
        if states[name].kind in ("flat", "mask"):
            what = "a flattened spatial blob" if states[name].kind == "flat" else "a Pooling mask"
            raise MatlabLayoutError(f"--matlab: net output {name!r} is {what}, whose values the row-major net "
                                    "would give in another order")
    for name, shape in list(net.inputs.items()):
        net.inputs[name] = _expected(tuple(shape), states[name]) or tuple(shape)
        if states[name] == SWAPPED:
            note(net, name, INPUT, f"input shape {list(shape)} -> {list(net.inputs[name])}: H and W swapped")
    _check_shapes(net, expected)
    net.conversion.matlab = True


def _check_shapes(net: Net, expected: list[list[Shape | None]]) -> None:
    """Infer ``g``'s shapes again (later passes read them) and hold them to ``f``'s, transposed where spatial."""
    warnings = list(net.warnings)
    infer_shapes(net)
    net.warnings = warnings  # the same complaints as the read already made, or the check below fails
    for layer, wanted in zip(net.layers, expected, strict=True):
        got = [tuple(shape) if shape is not None else None for shape in layer.top_shapes]
        if got != [tuple(shape) if shape is not None else None for shape in wanted]:
            raise MatlabLayoutError(f"--matlab: the row-major net computes tops of shape {got} where "
                                    f"{wanted} are needed (the layer's parameters fix a spatial size)",
                                    layer=layer.name)
