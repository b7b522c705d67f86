"""Small helpers every pass uses: arithmetic precision, reports, graph lookups."""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Net, ReportEntry


def as_compute(blob: np.ndarray) -> np.ndarray:
    """The blob in the precision transforms compute in: at least float32 (fp16 widens exactly)."""
    return np.asarray(blob, dtype=np.promote_types(blob.dtype, np.float32))


def vector(blob: np.ndarray) -> np.ndarray:
    """A per-channel blob as a 1-D array; legacy files store them 4-D, e.g. (1, 1, 1, C)."""
    return as_compute(blob).reshape(-1)


def note(net: Net, layer: Layer | str, action: str, detail: str = "") -> None:
    net.report.append(ReportEntry(layer if isinstance(layer, str) else layer.name, action, detail))


def first_consumer(net: Net, index: int, blob: str) -> tuple[int, Layer] | None:
    """The first layer after ``net.layers[index]`` that reads ``blob``."""
    for j in range(index + 1, len(net.layers)):
        if blob in net.layers[j].bottoms:
            return j, net.layers[j]
    return None


def producer(net: Net, index: int, blob: str) -> Layer | None:
    """The last layer before ``net.layers[index]`` that writes ``blob``."""
    for j in range(index - 1, -1, -1):
        if blob in net.layers[j].tops:
            return net.layers[j]
    return None
