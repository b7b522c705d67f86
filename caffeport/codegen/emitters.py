"""The PyTorch code of each Caffe layer type ``-f torch-code`` generates, one emitter per type.

Sections follow the modules of `caffeport.layers` whose rules they restate
(read each one's docstring for Caffe's semantics); the generated code is
checked against ``caffeport.run`` on every shared model and on synthetic
nets of the types those lack (tests/codegen/).

Weights come from the torch backend (`caffeport.transforms`): Caffe's own
layouts, BatchNorm's scale factor divided out and a following Scale folded
in, InnerProduct as (out, in). The code is written for any input size where
Caffe's rule allows it (pooling sizes, Reshape's 0 dims and Crop windows are
computed from the tensors at run time); PriorBox is a constant for the
prototxt's input size.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.codegen.registry import LayerCode, NotGenerated, axes, emits, number
from caffeport.layers import layer_type
from caffeport.layers.concat import concat_axis
from caffeport.layers.crop import crop_offsets
from caffeport.layers.eltwise import OPERATIONS
from caffeport.layers.fields import axis_index, enum_name, ints, proto_shape
from caffeport.layers.permute import full_order
from caffeport.layers.pooling import pool_method, rounds_down
from caffeport.layers.scale import broadcast_shape
from caffeport.layers.slice import slice_axis
from caffeport.layers.windows import conv_window, pool_window


def _f32(blob: object) -> np.ndarray:
    """A blob as float32 (what the generated modules hold; fp16 and fp64 blobs widened or rounded as the reference)."""
    return np.asarray(blob, dtype=np.float32)


def _weights(code: LayerCode) -> list[tuple[str, object]]:
    """The torch backend's (name, blob) pairs of the layer, in its module's own order."""
    return list(zip(code.layer.weight_names, code.layer.blobs, strict=True))


def _kwargs(**values: object) -> str:
    """``, key=value`` for each value given (None left out)."""
    return "".join(f", {key}={value}" for key, value in values.items() if value is not None)


# ---------------------------------------------------------------------------- convolution, deconvolution


@emits("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise", "Deconvolution")
def convolution(code: LayerCode) -> None:
    """``nn.Conv{n}d`` / ``nn.ConvTranspose{n}d``: Caffe's window, groups and weights map one to one.

    Caffe's Deconvolution output ``stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad`` is
    ConvTranspose's with ``output_padding`` 0; its weight (in, out / group, *kernel) is ConvTranspose's layout.
    Each bottom gets its own top through the one shared module, as in Caffe.
    """
    layer, shape = code.layer, code.shape
    kind = layer_type(layer.type)
    p = code.params("convolution_param")
    if axis_index(layer, p.get("axis", 1), len(shape)) != 1:
        raise NotGenerated("convolution over axes other than 2.. (convolution_param.axis != 1)")
    spatial = len(shape) - 2
    if not 1 <= spatial <= 3:
        raise NotGenerated(f"a convolution over {spatial} spatial axes (PyTorch has 1 to 3)")
    window = conv_window(layer, spatial)
    channels = shape[1]
    groups = kind.group(layer, channels)  # type: ignore[attr-defined]
    num_output = kind.num_output(layer, channels)  # type: ignore[attr-defined]
    transposed = layer.type == "Deconvolution"
    bias = bool(p.get("bias_term", True))
    weight = np.asarray(layer.blobs[0])
    weight = weight.reshape(weight.shape[0], -1, *window.kernel)  # V1 files store 1-D and 3-D kernels 4-D too
    tensors: list[tuple[str, object]] = [("weight", weight)]
    if bias:
        tensors.append(("bias", layer.blobs[1]))
    cls = f"nn.ConvTranspose{spatial}d" if transposed else f"nn.Conv{spatial}d"
    options = _kwargs(stride=axes(window.stride) if any(s != 1 for s in window.stride) else None,
                      padding=axes(window.pad) if any(window.pad) else None,
                      dilation=axes(window.dilation) if any(d != 1 for d in window.dilation) else None,
                      groups=groups if groups != 1 else None, bias=None if bias else "False")
    module = code.module(f"{cls}({channels}, {num_output}, {axes(window.kernel)}{options})", tensors)
    for bottom, top in zip(code.bottoms, code.tops, strict=True):
        code.body.append(f"{top} = {module}({bottom})")


# ---------------------------------------------------------------------------- pooling


@emits("Pooling")
def pooling(code: LayerCode) -> None:
    """Global pooling as a reduction; otherwise `caffe_pool2d` (Caffe's ceil rounding, clipped window, divisor)."""
    p = code.params()
    method = pool_method(p.get("pool"))
    if method not in ("MAX", "AVE"):
        raise NotGenerated(f"pool {method} (Caffe has no CPU forward for it)")
    if len(code.tops) > 1:
        raise NotGenerated("the MAX pooling mask top (argmax indices)")
    if len(code.shape) != 4:
        raise NotGenerated("pooling of a non-4-D input")
    if p.get("global_pooling", False):
        reduce = "amax" if method == "MAX" else "mean"
        code.assign(f"{code.x}.{reduce}(dim=(2, 3), keepdim=True)")
        return
    window = pool_window(code.layer)
    ceil = "" if not rounds_down(code.layer) else ", ceil=False"
    code.helpers.add("caffe_pool2d")
    code.assign(f'caffe_pool2d({code.x}, "{method}", kernel={window.kernel}, stride={window.stride}, '
                f"pad={window.pad}{ceil})")


# ---------------------------------------------------------------------------- inner_product


@emits("InnerProduct")
def inner_product(code: LayerCode) -> None:
    """``nn.Linear`` over the axes from ``axis`` on, flattened in C order (Caffe's own: NCHW, no reorder)."""
    p = code.params()
    axis = axis_index(code.layer, p.get("axis", 1), len(code.shape))
    k = math.prod(code.shape[axis:])
    bias = bool(p.get("bias_term", True))
    module = code.module(f"nn.Linear({k}, {p['num_output']}{'' if bias else ', bias=False'})",
                         _weights(code))
    x = code.x if axis == len(code.shape) - 1 else f"{code.x}.flatten({axis})"
    code.assign(f"{module}({x})")


# ---------------------------------------------------------------------------- activations, prelu, softmax


@emits("ReLU")
def relu(code: LayerCode) -> None:
    slope = float(np.float32(code.params().get("negative_slope", 0.0) or 0.0))
    code.assign(f"F.leaky_relu({code.x}, {number(slope)})" if slope else f"F.relu({code.x})")


@emits("Sigmoid")
def sigmoid(code: LayerCode) -> None:
    code.assign(f"torch.sigmoid({code.x})")


@emits("TanH")
def tanh(code: LayerCode) -> None:
    code.assign(f"torch.tanh({code.x})")


@emits("AbsVal")
def abs_val(code: LayerCode) -> None:
    code.assign(f"torch.abs({code.x})")


@emits("Power")
def power(code: LayerCode) -> None:
    """``(shift + scale * x) ** power``; a constant when ``power * scale`` is 0 (Caffe does not read the input)."""
    p = code.params()
    pw, scale, shift = (np.float32(p.get(key, default)) for key, default in
                        (("power", 1.0), ("scale", 1.0), ("shift", 0.0)))
    if pw * scale == 0:
        value = 1.0 if pw == 0 else float(np.float32(np.power(np.float64(shift), pw)))
        code.assign(f"torch.full_like({code.x}, {number(value)})")
        return
    expression = code.x
    if scale != 1:
        expression = f"{expression} * {number(scale)}"
    if shift != 0:
        expression = f"{expression} + {number(shift)}"
    if pw != 1:
        expression = f"({expression}) ** {number(pw)}"
    code.assign(expression if expression != code.x else f"{code.x}.clone()")


@emits("PReLU")
def prelu(code: LayerCode) -> None:
    """``nn.PReLU(C)`` (weight (C,)), or ``nn.PReLU()`` with ``channel_shared``."""
    shared = bool(code.params().get("channel_shared", False))
    count = "" if shared else str(code.shape[1])
    module = code.module(f"nn.PReLU({count})", [("weight", _f32(code.layer.blobs[0]).reshape(-1))])
    code.assign(f"{module}({code.x})")


@emits("Softmax")
def softmax(code: LayerCode) -> None:
    axis = axis_index(code.layer, code.params().get("axis", 1), len(code.shape))
    code.assign(f"F.softmax({code.x}, dim={axis})")


# ---------------------------------------------------------------------------- batch_norm, scale


@emits("BatchNorm")
def batch_norm(code: LayerCode) -> None:
    """``nn.BatchNorm{1,2,3}d`` with Caffe's eps; the stored scale factor is divided out of the weights.

    A Scale that follows it is folded in (affine weight and bias), so this layer's own output is not computed
    alone: ``return_all`` records the value under the Scale's key instead.
    """
    p = code.params()
    if p.get("use_global_stats") is False:
        raise NotGenerated("use_global_stats: false (normalizing with the batch's own statistics)")
    ndim = len(code.shape)
    if not 2 <= ndim <= 5:
        raise NotGenerated(f"a {ndim}-D input (nn.BatchNorm*d takes 2 to 5 axes)")
    dims = {2: 1, 3: 1, 4: 2, 5: 3}[ndim]
    eps = number(p.get("eps", 1e-5))
    fused = code.layer.params.get("fused_scale")
    affine = len(code.layer.blobs) == 4
    options = f", eps={eps}" + ("" if affine else ", affine=False")
    module = code.module(f"nn.BatchNorm{dims}d({code.shape[1]}{options})", _weights(code))
    code.batchnorm = True
    if fused:
        code.recorded = False
        no_bias = "" if fused.get("bias_term", True) else " (no bias_term: zero bias)"
        code.body.append(f"# with Scale {fused['name']!r} folded in{no_bias}")
    code.assign(f"{module}({code.x})")


@emits("FusedScale")
def fused_scale(code: LayerCode) -> None:
    """A Scale the torch backend folded into the BatchNorm before it: nothing left to compute."""
    code.body.append("# folded into the BatchNorm before it (its weights are that module's weight and bias)")
    if code.tops[0] != code.x:
        code.assign(code.x)


def _broadcast(code: LayerCode) -> tuple[tuple[int, ...], int]:
    """The learned operand's shape and the canonical axis it starts at (0 for a scalar)."""
    p = code.params()
    shape = broadcast_shape(code.layer, p, code.shape)
    assert shape is not None
    factor = tuple(int(d) for d in shape if d is not None)
    return factor, (axis_index(code.layer, p.get("axis", 1), len(code.shape)) if factor else 0)


@emits("Scale")
def scale(code: LayerCode) -> None:
    """A learned factor (`Scale` module) or the second bottom's (`along`), broadcast from ``axis`` as Caffe."""
    p = code.params()
    bias = bool(p.get("bias_term", False))
    if len(code.bottoms) >= 2:
        if bias:
            raise NotGenerated("a two-bottom Scale with a learned bias_term")
        factor_shape = code.layer.bottom_shapes[1]
        assert factor_shape is not None
        axis = axis_index(code.layer, p.get("axis", 1), len(code.shape)) if factor_shape else 0
        code.helpers.add("along")
        code.assign(f"{code.x} * along({code.bottoms[1]}, {axis}, {code.x}.dim())")
        return
    shape, axis = _broadcast(code)
    tensors = [(name, _f32(blob).reshape(shape)) for name, blob in _weights(code)]
    module = code.module(f"Scale({shape}, axis={axis}{', bias=True' if bias else ''})", tensors, "Scale")
    code.assign(f"{module}({code.x})")


@emits("Bias")
def bias(code: LayerCode) -> None:
    if len(code.bottoms) >= 2:
        factor_shape = code.layer.bottom_shapes[1]
        assert factor_shape is not None
        axis = axis_index(code.layer, code.params().get("axis", 1), len(code.shape)) if factor_shape else 0
        code.helpers.add("along")
        code.assign(f"{code.x} + along({code.bottoms[1]}, {axis}, {code.x}.dim())")
        return
    shape, axis = _broadcast(code)
    module = code.module(f"Bias({shape}, axis={axis})", [("bias", _f32(code.layer.blobs[0]).reshape(shape))], "Bias")
    code.assign(f"{module}({code.x})")


# ---------------------------------------------------------------------------- eltwise, concat, slice, split


@emits("Eltwise")
def eltwise(code: LayerCode) -> None:
    """SUM with its coefficients (1 left out), PROD, MAX (``torch.maximum``, pairwise in bottom order)."""
    kind = layer_type("Eltwise")
    op = enum_name(code.params().get("operation"), OPERATIONS, "SUM")
    coeffs = kind.coefficients(code.layer, len(code.bottoms))  # type: ignore[attr-defined]
    if op == "PROD":
        code.assign(" * ".join(code.bottoms))
    elif op == "MAX":
        expression = code.bottoms[0]
        for bottom in code.bottoms[1:]:
            expression = f"torch.maximum({expression}, {bottom})"
        code.assign(expression)
    else:
        terms = []
        for coeff, bottom in zip(coeffs, code.bottoms, strict=True):
            c = float(np.float32(coeff))
            terms.append(bottom if c == 1 else f"{number(c)} * {bottom}")
        code.assign(" + ".join(terms))


@emits("Concat")
def concat(code: LayerCode) -> None:
    axis = concat_axis(code.layer, len(code.shape))
    if len(code.bottoms) == 1:
        code.assign(code.x)
        return
    code.assign(f"torch.cat([{', '.join(code.bottoms)}], dim={axis})")


@emits("Slice")
def slice_(code: LayerCode) -> None:
    """``torch.tensor_split`` at the slice points, or ``torch.chunk`` into equal parts."""
    axis = slice_axis(code.layer, len(code.shape))
    points = ints(code.params().get("slice_point"))
    if len(code.tops) == 1:
        code.assign(code.x)
        return
    if points:
        expression = f"torch.tensor_split({code.x}, {points}, dim={axis})"
    else:
        expression = f"torch.chunk({code.x}, {len(code.tops)}, dim={axis})"
    code.body.append(f"{', '.join(code.tops)} = {expression}")


@emits("Split")
def split(code: LayerCode) -> None:
    code.body.append(f"{' = '.join(code.tops)} = {code.x}")


# ---------------------------------------------------------------------------- flatten, reshape, permute, crop


@emits("Flatten")
def flatten(code: LayerCode) -> None:
    p = code.params()
    start = axis_index(code.layer, p.get("axis", 1), len(code.shape))
    end = axis_index(code.layer, p.get("end_axis", -1), len(code.shape), "end_axis")
    end_text = "" if end == len(code.shape) - 1 else f", {end}"
    code.assign(f"{code.x}.flatten({start}{end_text})")


@emits("Reshape")
def reshape(code: LayerCode) -> None:
    """A plain reshape; Caffe's 0 dims copy the input's (``x.shape[i]``), its -1 is PyTorch's."""
    p = code.params()
    dims = list(proto_shape(p.get("shape", {})))
    ndim = len(code.shape)
    axis, num_axes = int(p.get("axis", 0)), int(p.get("num_axes", -1))
    start = axis if axis >= 0 else ndim + axis + 1
    end = ndim if num_axes == -1 else start + num_axes
    x = code.x
    parts = [f"{x}.shape[{i}]" for i in range(start)]
    parts += [f"{x}.shape[{start + i}]" if d == 0 else str(d) for i, d in enumerate(dims)]
    parts += [f"{x}.shape[{i}]" for i in range(end, ndim)]
    code.assign(f"{x}.reshape({', '.join(parts)})" if len(parts) != 1 else f"{x}.reshape({parts[0]},)")


@emits("Permute")
def permute(code: LayerCode) -> None:
    order = full_order(code.layer, len(code.shape))
    code.assign(code.x if order == sorted(order) else f"{code.x}.permute({', '.join(map(str, order))})")


@emits("Crop")
def crop(code: LayerCode) -> None:
    """The window at the offsets, as large as the second bottom along each axis from ``axis`` on."""
    if len(code.bottoms) != 2:
        raise NotGenerated(f"Crop takes 2 bottoms, this one has {len(code.bottoms)}")
    reference = code.layer.bottom_shapes[1]
    assert reference is not None
    offsets = crop_offsets(code.layer, code.shape, reference)
    axis = axis_index(code.layer, code.params().get("axis", 2), len(code.shape))
    ref = code.bottoms[1]
    index = [":" if i < axis else f"{o}:{o} + {ref}.shape[{i}]" if o else f":{ref}.shape[{i}]"
             for i, o in enumerate(offsets)]
    code.assign(f"{code.x}[{', '.join(index)}]")


@emits("Dropout")
def dropout(code: LayerCode) -> None:
    code.body.append("# the identity at test time")
    code.assign(code.x)


# ---------------------------------------------------------------------------- lrn, normalize, interp


@emits("LRN")
def lrn(code: LayerCode) -> None:
    """ACROSS_CHANNELS is ``F.local_response_norm`` (the same formula); WITHIN_CHANNEL a helper."""
    p = code.params()
    size = int(p.get("local_size", 5))
    alpha, beta = number(p.get("alpha", 1.0)), number(p.get("beta", 0.75))
    region = p.get("norm_region", "ACROSS_CHANNELS")
    region = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}.get(region, str(region))
    if region == "ACROSS_CHANNELS":
        code.assign(f"F.local_response_norm({code.x}, {size}, alpha={alpha}, beta={beta}, k={number(p.get('k', 1.0))})")
    elif region == "WITHIN_CHANNEL":
        code.helpers.add("lrn_within_channel")
        code.assign(f"lrn_within_channel({code.x}, {size}, alpha={alpha}, beta={beta})")
    else:
        raise NotGenerated(f"norm_region {region}")


@emits("Normalize")
def normalize(code: LayerCode) -> None:
    p = code.params()
    if len(code.shape) > 4:
        raise NotGenerated("Normalize of a bottom of more than 4 axes")
    across, shared = bool(p.get("across_spatial", True)), bool(p.get("channel_shared", True))
    options = ("" if across else ", across_spatial=False") + ("" if shared else ", channel_shared=False")
    weight = _f32(code.layer.blobs[0]).reshape(-1)[: 1 if shared else None]
    module = code.module(f"Normalize({code.shape[1]}{options}, eps={number(p.get('eps', 1e-10))})",
                         [("weight", weight)], "Normalize")
    code.assign(f"{module}({code.x})")


@emits("Interp")
def interp(code: LayerCode) -> None:
    """`caffe_interp`, with the size rule ``InterpLayer::Reshape`` picks from the params given."""
    p = code.params()
    if len(code.bottoms) != 1 or len(code.shape) != 4:
        raise NotGenerated("an Interp of other than one 4-D bottom")
    given = {key for key in ("height", "width", "zoom_factor", "shrink_factor") if p.get(key) is not None}

    def last(key: str) -> int:
        return ints(p.get(key))[-1]

    options = []
    if "shrink_factor" in given:
        options.append(f"shrink={last('shrink_factor')}")
    if "zoom_factor" in given:
        options.append(f"zoom={last('zoom_factor')}")
    if not options:
        options.append(f"size=({last('height')}, {last('width')})")
    for key in ("pad_beg", "pad_end"):
        if ints(p.get(key)) and last(key):
            options.append(f"{key}={last(key)}")
    code.helpers.add("caffe_interp")
    code.assign(f"caffe_interp({code.x}, {', '.join(options)})")


# ---------------------------------------------------------------------------- prior_box


@emits("PriorBox")
def prior_box(code: LayerCode) -> None:
    """The priors for the prototxt's sizes, computed now by the reference's own PriorBox (a constant buffer)."""
    shapes = code.layer.bottom_shapes
    bottoms = [np.zeros(shape, np.float32) for shape in shapes]  # type: ignore[arg-type]
    (priors,) = layer_type("PriorBox").forward(code.layer, bottoms)
    sizes = tuple(tuple(shape[2:]) for shape in shapes)  # type: ignore[index]
    module = code.module(f"PriorBoxes({tuple(priors.shape)}, sizes={sizes})", [("priors", priors)], "PriorBoxes")
    code.assign(f"{module}({', '.join(code.bottoms)})")


# ---------------------------------------------------------------------------- embed, recurrent


@emits("Embed")
def embed(code: LayerCode) -> None:
    """`CaffeEmbed`: a row of the (input_dim, num_output) weight per input value, plus the bias."""
    p = code.params()
    weight = np.asarray(code.layer.blobs[0])
    bias = bool(p.get("bias_term", True))
    module = code.module(f"CaffeEmbed({weight.shape[0]}, {weight.shape[1]}{'' if bias else ', bias=False'})",
                         _weights(code), "CaffeEmbed")
    code.assign(f"{module}({code.x})")


@emits("LSTM")
def lstm(code: LayerCode) -> None:
    """`CaffeLSTM`: the step loop with ``cont`` restarts (PyTorch's nn.LSTM has no ``cont``)."""
    layer_kind = layer_type(code.layer.type)
    if layer_kind.has_static(code.layer):  # type: ignore[attr-defined]
        raise NotGenerated("an LSTM with a static input (x_static)")
    hidden = int(code.params()["num_output"])
    size = math.prod(code.shape[2:])
    module = code.module(f"CaffeLSTM({size}, {hidden})", _weights(code), "CaffeLSTM")
    states = code.bottoms[2:]  # expose_hidden: h_0, c_0 as bottoms, h_T, c_T as tops
    tops = code.tops if len(code.tops) == 3 else [code.tops[0], "_", "_"]
    code.body.append(f"{', '.join(tops)} = {module}({', '.join([code.x, code.bottoms[1], *states])})")


# ---------------------------------------------------------------------------- detection_output


@emits("DetectionOutput")
def detection_output(code: LayerCode) -> None:
    """`caffe_detection_output`: SSD's decode, per-class NMS and keep_top_k, step by step in the file; the params
    as the reference reads them (`caffeport.layers.detection_output.read_params`)."""
    from caffeport.layers.detection_output import read_params

    p = read_params(code.params())
    if p["num_classes"] is None:
        raise NotGenerated("detection_output_param has no num_classes")
    if len(code.bottoms) < 3:
        raise NotGenerated("DetectionOutput without its priors bottom")
    threshold = code.params().get("confidence_threshold")
    options = ", ".join([
        f"num_classes={p['num_classes']}", f"share_location={p['share']}",
        f"background_label_id={p['background']}", f'code_type="{p["code_type"]}"',
        f"variance_encoded_in_target={p['in_target']}", f"keep_top_k={p['keep_top_k']}",
        f"confidence_threshold={'-FLT_MAX' if threshold is None else number(p['score_threshold'])}",
        f"nms_threshold={number(p['nms_threshold'])}", f"eta={number(p['eta'])}", f"top_k={p['top_k']}"])
    code.helpers.add("caffe_detection_output")
    code.assign(f"caffe_detection_output({', '.join(code.bottoms[:3])}, {options})")
