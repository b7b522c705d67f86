"""BatchNorm passes: Caffe's stored scale factor, and fusing the Scale that follows.

Caffe's BatchNorm stores (mean * s, variance * s, s), where s is the moving
average normaliser; it has no affine part, so models put a Scale layer after
it. Keras and PyTorch keep gamma/beta inside their BatchNorm, so the pair
becomes one layer named after the BatchNorm.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Net
from caffeport.layers.layout import note, report_action, vector
from caffeport.transforms.common import BlobIndex
from caffeport.transforms.registry import Options, register_pass

FUSED = report_action("fused", "BatchNorm+Scale fused")
ALONE = report_action("batchnorm-alone", "BatchNorm without Scale")

CAFFE_DEFAULT_EPS = 1e-5


def _eps(value: object) -> float:
    """Caffe keeps eps as float32: report the float32 value by its shortest decimal (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value if value is not None else CAFFE_DEFAULT_EPS)))


@register_pass("batchnorm_scale_factor", provides=("batchnorm_normalized",))
def batchnorm_scale_factor(net: Net, options: Options) -> None:
    """Turn (mean*s, var*s, s) into (mean, var), computed as Caffe does: times 1/s in float32, 0 when s is 0."""
    eps_values: dict[str, float] = net.conversion.batchnorm_eps
    for layer in net.layers:
        if layer.type != "BatchNorm" or not layer.blobs:
            continue
        if len(layer.blobs) != 3:
            raise ModelStructureError(f"BatchNorm has {len(layer.blobs)} blobs, expected 3 (mean, variance, "
                                      "scale factor)", layer=layer.name)
        mean, var, factor_blob = (vector(b) for b in layer.blobs)
        s = factor_blob[0].astype(mean.dtype)
        factor = mean.dtype.type(0) if s == 0 else mean.dtype.type(1) / s
        layer.blobs = [mean * factor, var * factor]
        eps = _eps(layer.param("batch_norm_param").get("eps"))
        eps_values[layer.name] = eps
        note(net, layer, "batchnorm-scale-factor", f"mean and variance divided by the stored factor {float(s):g}"
             + (" (0: zeros, as Caffe)" if s == 0 else "") + f"; eps {eps:g}")


@register_pass("fuse_batchnorm_scale", requires=("batchnorm_normalized",), provides=("batchnorm_fused",))
def fuse_batchnorm_scale(net: Net, options: Options) -> None:
    """Fold a Scale that directly follows a BatchNorm into it: blobs become [gamma, (beta,) mean, var].

    Only when the Scale is the first reader of the BatchNorm's output and, if
    the Scale writes a new blob, nothing else reads the un-scaled one:
    otherwise some layer needs the BatchNorm output alone and both stay.
    A BatchNorm without a Scale keeps [mean, var].
    """
    fused: dict[str, str] = net.conversion.fused
    graph = BlobIndex(net)
    for index, layer in enumerate(net.layers):
        if layer.type != "BatchNorm" or len(layer.blobs) != 2 or len(layer.tops) != 1:
            continue
        found = graph.first_reader(index, layer.tops[0])
        if found is None:
            continue
        j, scale = found
        if scale.type != "Scale" or len(scale.bottoms) != 1 or not scale.blobs:
            note(net, layer, ALONE, "no Scale follows: moving mean and variance only")
            continue
        in_place = scale.tops == scale.bottoms
        if not in_place and graph.first_reader(j, layer.tops[0]) is not None:
            note(net, layer, ALONE, f"its output is also read without {scale.name!r}: not fused")
            continue
        gamma = vector(scale.blobs[0])
        beta = [vector(scale.blobs[1])] if len(scale.blobs) > 1 else []
        layer.blobs = [gamma, *beta, *layer.blobs]
        layer.params["fused_scale"] = {"name": scale.name, "bias_term": bool(beta)}
        scale.blobs = []
        scale.type = "FusedScale"
        fused[scale.name] = layer.name
        note(net, layer, FUSED, f"Scale {scale.name!r} folded in: gamma" + (", beta" if beta else " (no bias)"))
        note(net, scale, "fused-into", layer.name)
