"""What the per-type weight layouts share: the user's choices, arithmetic precision, blob counts, report entries.

A layer type's ``keras_layout`` / ``torch_layout`` method (see
`caffeport.layers.registry.LayerType`) turns that layer's Caffe blobs into the
weights of the matching Keras or PyTorch layer, in that layer's own order;
`caffeport.transforms.layouts.run_layouts` calls it for every layer with blobs.
Kernels stay numpy views of the stored blobs where they can: exporters copy and
cast them block by block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net, ReportEntry


@dataclass(frozen=True)
class Options:
    """Choices a user can make about a conversion, the same for every backend."""

    #: "depthwise": depthwise convolutions become DepthwiseConv2D kernels (kh, kw, C, multiplier);
    #: "grouped": they keep the grouped Conv2D layout (kh, kw, 1, out)
    depthwise: str = "depthwise"
    #: drop layers of unknown types that carry blobs instead of passing their blobs through
    skip_unknown: bool = False
    #: a MATLAB-trained net (trained on transposed images) rewritten for row-major images, before the backend's
    #: passes (`caffeport.transforms.matlab`)
    matlab: bool = False


def as_compute(blob: np.ndarray) -> np.ndarray:
    """The blob in the precision transforms compute in: at least float32 (fp16 widens exactly)."""
    return np.asarray(blob, dtype=np.promote_types(blob.dtype, np.float32))


def vector(blob: np.ndarray) -> np.ndarray:
    """A per-channel blob as a 1-D array; legacy files store them 4-D, e.g. (1, 1, 1, C)."""
    return as_compute(blob).reshape(-1)


#: report action -> how the convert summary counts it ("3 BatchNorm+Scale fused"), declared where the action is done
REPORT_LABELS: dict[str, str] = {}


def report_action(action: str, label: str) -> str:
    """Declare a report action and its summary label; returns ``action`` (for a module-level constant)."""
    REPORT_LABELS.setdefault(action, label)
    return action


def note(net: Net, layer: Layer | str, action: str, detail: str = "") -> None:
    """Record what a pass did to a layer in ``net.report`` (the convert report, ``-v``)."""
    net.report.append(ReportEntry(layer if isinstance(layer, str) else layer.name, action, detail))


def expect_blobs(layer: Layer, *counts: int) -> None:
    """Refuse a layer whose blob count is none of ``counts`` (a corrupt or mismatched model)."""
    if len(layer.blobs) not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise ModelStructureError(f"{layer.type} layer has {len(layer.blobs)} blobs, expected {wanted}",
                                  layer=layer.name)


#: the action of a layout that writes a Caffe layer as two target layers (Embed bias, RNN output)
SPLIT = report_action("split", "layers split")
