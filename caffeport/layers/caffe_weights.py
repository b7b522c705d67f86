"""Reading Caffe's weight blobs in their canonical form, whatever file generation wrote them.

Both target families start from the same facts: an InnerProduct matrix is
(out, in) whether stored legacy 4-D or with ``transpose: true``; a grouped
Deconvolution is a block-diagonal full kernel; a depthwise convolution is one
whose every group sees one input channel. These live here once.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.errors import ModelStructureError, option_error
from caffeport.ir import Layer
from caffeport.layers.layout import as_compute

#: a grouped Deconvolution expands to a block-diagonal kernel `group` times its stored size; above this many bytes
#: and this factor a small file would make caffeport allocate and write gigabytes, so it refuses instead
MAX_EXPANDED_BYTES = 64 * 2**20
MAX_EXPANSION = 64


def inner_product_matrix(layer: Layer) -> np.ndarray:
    """The InnerProduct weight as (out, in), from (out, in), (in, out) with transpose, or legacy (1, 1, out, in).

    A view of the stored blob (stored dtype), never a copy: see `caffeport.streaming.blocks`.
    """
    w = np.asarray(layer.blobs[0])
    if w.ndim > 2:
        if math.prod(w.shape[:-2]) != 1:
            raise ModelStructureError(f"InnerProduct weight of shape {w.shape} is not a matrix", layer=layer.name)
        w = w.reshape(w.shape[-2:])
    elif w.ndim != 2:
        raise ModelStructureError(f"InnerProduct weight of shape {w.shape} is not a matrix", layer=layer.name)
    p = layer.param("inner_product_param")
    if p.get("transpose", False):
        w = w.T
    num_output = p.get("num_output")
    if num_output is not None and w.shape[0] != num_output:
        raise ModelStructureError(
            f"InnerProduct weight has {w.shape[0]} outputs but num_output is {num_output}", layer=layer.name
        )
    return w


def conv_weight(layer: Layer) -> np.ndarray:
    """The (De)Convolution weight as stored (a view, stored dtype), at least 3-D (legacy files are 4-D already)."""
    w = np.asarray(layer.blobs[0])
    if w.ndim < 3:
        raise ModelStructureError(f"{layer.type} weight of shape {w.shape} has no spatial axes", layer=layer.name)
    return w


def is_depthwise(layer: Layer, groups: int) -> bool:
    """``groups`` > 1 and every group reads one input channel: W is (C * multiplier, 1, kh, kw) with C groups."""
    w = layer.blobs[0]
    return groups > 1 and w.ndim == 4 and w.shape[1] == 1 and w.shape[0] % groups == 0


def deconv_full_kernel(layer: Layer, g: int) -> np.ndarray:
    """Deconvolution W (in, out/g, kh, kw) with ``g`` groups as the equivalent ungrouped (in, out, kh, kw)."""
    w = conv_weight(layer)
    if g == 1:
        return w
    w = as_compute(w)
    cin, opg = w.shape[0], w.shape[1]
    if cin % g:
        raise ModelStructureError(f"Deconvolution input channels {cin} not divisible by group {g}",
                                  layer=layer.name)
    ipg = cin // g
    expanded = cin * opg * g * math.prod(w.shape[2:]) * w.dtype.itemsize
    if expanded > MAX_EXPANDED_BYTES and expanded > MAX_EXPANSION * w.nbytes:
        raise option_error(
            ModelStructureError,
            "Deconvolution group {g}: its block-diagonal kernel would take {mib} MiB, {factor} times the {stored} MiB "
            "stored (caffeport refuses more than {limit} times above {limit_mib} MiB); use a format that keeps "
            "groups ({backend=torch}, {format=safetensors}) or the caffe backend",
            fill={"g": g, "mib": f"{expanded / 2**20:,.0f}", "factor": f"{expanded // max(w.nbytes, 1):,}",
                  "stored": f"{w.nbytes / 2**20:,.1f}", "limit": MAX_EXPANSION,
                  "limit_mib": MAX_EXPANDED_BYTES // 2**20},
            layer=layer.name)
    full = np.zeros((cin, opg * g, *w.shape[2:]), dtype=w.dtype)
    for i in range(g):
        full[i * ipg:(i + 1) * ipg, i * opg:(i + 1) * opg] = w[i * ipg:(i + 1) * ipg]
    return full
