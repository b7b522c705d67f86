"""The framework-neutral intermediate representation every reader produces.

A `Net` is the net's layers in file order. A `Layer` keeps Caffe's own view of
itself: the V2 type string, its bottoms and tops, its ``*_param`` messages as
plain dicts (keys as in a prototxt, e.g. ``params["convolution_param"]``, with
Caffe's defaults filled in for the fields converters use), and its blobs as
numpy arrays in Caffe's layout and stored precision. Transforms and exporters
work on this and nothing else, so they never see which file format a model
came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Shape = tuple[int, ...]


class Reshaped:
    """``view`` read in C order, presented with ``shape`` (same number of elements): a lazy blob.

    Used where the target array is a reshape of a strided view that numpy can
    only express by copying (the flatten reorder of an InnerProduct after a
    spatial blob): the copy then happens block by block, when the exporter
    writes, instead of all at once in the transform. It is a value of the IR,
    like a numpy blob, so it lives here where transforms (which make it) and
    the streaming code (`caffeport.streaming.blocks`, which copies it in blocks) both
    can import it downwards; how its elements are streamed is the streaming
    code's business, not the IR's.
    """

    def __init__(self, view: np.ndarray, shape: tuple[int, ...]) -> None:
        if math.prod(shape) != view.size:
            raise ValueError(f"cannot present {view.shape} as {shape}")
        self.view = view
        self.shape = tuple(shape)
        self.dtype = view.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return self.view.size

    @property
    def nbytes(self) -> int:
        return self.view.nbytes

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = np.ascontiguousarray(self.view).reshape(self.shape)
        return array if dtype is None else array.astype(dtype, copy=False)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self)[index]

    def __repr__(self) -> str:
        return f"Reshaped(shape={self.shape}, dtype={self.dtype}, view of {self.view.shape})"


@dataclass
class Layer:
    """One Caffe layer.

    ``blobs`` are in Caffe's layout with the shape ``Blob::FromProto`` gives
    (legacy 4-D dims kept as stored) and the stored dtype (float32 ``data``,
    float64 ``double_data``, float16 NVIDIA ``raw_data``). Arrays read from a
    caffemodel are read-only views onto the file's memory map. After a
    transform a blob may also be a `Reshaped` view (it has
    ``shape``/``dtype`` and converts with ``numpy.asarray``).

    ``bottom_shapes``/``top_shapes`` are filled by shape inference
    (`caffeport.layers.shapes.infer_shapes`): ``None`` where a shape is unknown.
    """

    name: str
    type: str
    bottoms: list[str] = field(default_factory=list)
    tops: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    blobs: list[np.ndarray] = field(default_factory=list)
    bottom_shapes: list[Shape | None] = field(default_factory=list)
    top_shapes: list[Shape | None] = field(default_factory=list)
    #: set by transforms: the target's name for each blob, in the target layer's own order
    weight_names: list[str] = field(default_factory=list)
    #: set by transforms: the layer class of the framework the layout is for ("Conv2D", "BatchNormalization",
    #: "Linear", ...; "" where no transform ran or the layer has no class of its own)
    framework_class: str = ""

    def param(self, key: str) -> dict[str, Any]:
        """The ``*_param`` dict named ``key`` (``{}`` when the layer has none)."""
        value = self.params.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def num_weights(self) -> int:
        """Total number of elements over all blobs."""
        return int(sum(int(b.size) for b in self.blobs))


@dataclass(frozen=True)
class ReportEntry:
    """One thing a transform did to a layer, for the convert report."""

    layer: str
    action: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.layer}: {self.action}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class MatchReport:
    """How the prototxt's layers and the caffemodel's weights were paired.

    Caffe's ``CopyTrainedLayersFrom`` matches by layer name and silently drops
    what does not match; caffeport reports both sides instead.
    """

    #: prototxt layers of a weighted type that found no layer in the caffemodel
    missing_weights: list[str] = field(default_factory=list)
    #: caffemodel layers with blobs that no prototxt layer took
    unused_weights: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.missing_weights and not self.unused_weights


#: Conversion.data_format values: how the converted model holds 4-D tensors (None: Caffe's own NCHW). With
#: ``weight_names`` "keras" the weights are laid out for it; a code format (keras-code) keeps Caffe's kernels
#: (``weight_names`` "torch") and lays them out itself
DATA_FORMATS = ("channels_last", "channels_first")
#: Conversion.weight_names values: the framework whose layouts and weight names the layout pass gave
WEIGHT_NAMES = ("keras", "torch")


@dataclass
class Conversion:
    """What the transforms recorded of the net they made, typed: the facts exporters and generators read.

    It replaces an untyped ``metadata`` dict that passes and exporters agreed on by key. Stored in converted
    files (`caffeport.exporters.registry.conversion_metadata`) and in the IR file (`as_dict` / `from_dict`).
    """

    #: the backend whose passes ran (None: a net as read)
    backend: str | None = None
    #: how the converted model holds 4-D tensors: one of `DATA_FORMATS`, or None (Caffe's own, NCHW)
    data_format: str | None = None
    #: whose layouts and weight names the layers have: one of `WEIGHT_NAMES` (set by the layout pass), or None
    weight_names: str | None = None
    #: BatchNorm layer -> Caffe's eps (the frameworks' defaults differ)
    batchnorm_eps: dict[str, float] = field(default_factory=dict)
    #: BatchNorm layer -> the Scale layer folded into it
    fused: dict[str, str] = field(default_factory=dict)
    #: Caffe layer name -> the name written (where Caffe's is not valid in the target)
    name_map: dict[str, str] = field(default_factory=dict)
    #: rewritten for row-major images (``--matlab``)
    matlab: bool = False
    #: convolution kernels rotated 180 degrees spatially, for a framework that convolves where Caffe
    #: cross-correlates (Theano); a Keras 2 file says so with its ``backend`` attribute
    kernels_flipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "data_format": self.data_format, "weight_names": self.weight_names,
                "batchnorm_eps": dict(self.batchnorm_eps),
                "fused": dict(self.fused), "name_map": dict(self.name_map), "matlab": self.matlab,
                "kernels_flipped": self.kernels_flipped}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Conversion:
        """The record `as_dict` wrote; ``TypeError`` or ``ValueError`` naming the first field of the wrong kind."""
        unknown = sorted(set(values) - {"backend", "data_format", "weight_names", "batchnorm_eps", "fused", "name_map",
                                        "matlab", "kernels_flipped"})
        if unknown:
            raise ValueError(f"unknown conversion fields {unknown}")
        backend, data_format = values.get("backend"), values.get("data_format")
        if backend is not None and not isinstance(backend, str):
            raise TypeError("conversion 'backend' is not a string")
        if data_format is not None and data_format not in DATA_FORMATS:
            raise ValueError(f"conversion 'data_format' {data_format!r} is not one of {DATA_FORMATS}")
        weight_names = values.get("weight_names")
        if weight_names is not None and weight_names not in WEIGHT_NAMES:
            raise ValueError(f"conversion 'weight_names' {weight_names!r} is not one of {WEIGHT_NAMES}")
        maps: dict[str, dict[str, Any]] = {}
        for key, kind in (("batchnorm_eps", (int, float)), ("fused", str), ("name_map", str)):
            entries = values.get(key, {})
            if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(v, kind) and
                                                        not isinstance(v, bool) for k, v in entries.items()):
                raise TypeError(f"conversion {key!r} is not a map of names to {getattr(kind, '__name__', 'numbers')}")
            maps[key] = entries
        flags = {key: values.get(key, False) for key in ("matlab", "kernels_flipped")}
        for key, flag in flags.items():
            if not isinstance(flag, bool):
                raise TypeError(f"conversion {key!r} is not a boolean")
        return cls(backend, data_format, weight_names, {k: float(v) for k, v in maps["batchnorm_eps"].items()},
                   dict(maps["fused"]), dict(maps["name_map"]), **flags)


@dataclass
class Net:
    """A whole net: layers in file order plus where they came from."""

    name: str = ""
    layers: list[Layer] = field(default_factory=list)
    #: net input blob name -> shape, from Input layers or legacy input/input_dim/input_shape
    inputs: dict[str, Shape] = field(default_factory=dict)
    #: what the net was read from: "V2", "V1", "V0" (the caffemodel's generation), "HDF5" or "prototxt" (no
    #: weights file); not an output format
    source_format: str = ""
    caffemodel_path: str | None = None
    prototxt_path: str | None = None
    match: MatchReport | None = None
    #: things a user should know that did not stop the read
    warnings: list[str] = field(default_factory=list)
    #: what transforms did, layer by layer (empty for a net as read)
    report: list[ReportEntry] = field(default_factory=list)
    #: what the transforms recorded (empty for a net as read)
    conversion: Conversion = field(default_factory=Conversion)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; `KeyError` naming it when there is none."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r} in net {self.name!r}")

    def __contains__(self, name: object) -> bool:
        return any(layer.name == name for layer in self.layers)

    @property
    def num_weights(self) -> int:
        return sum(layer.num_weights for layer in self.layers)
