"""The part of Caffe's ``caffe.proto`` a converter needs, as plain Python data.

caffeport reads Caffe files without Caffe and without the protobuf runtime, so
the schema that protobuf would normally bring along has to live somewhere: here.
It serves two readers:

* the binary reader decodes a length-delimited ``*_param`` message into a *raw
  dict* by looking up each field number in `MESSAGES` (the `FieldSpec` says
  which wire kind to expect and, for nested messages, which message to recurse
  into);
* both the binary reader and the prototxt reader then call `normalize`, so that
  one layer read from a ``.prototxt`` and from a ``.caffemodel`` ends up as the
  *same* plain dict, whatever spelling each file used (enum names or numbers,
  ``0``/``1`` or ``false``/``true``, ``eps: 0`` or ``eps: 0.0``).

The raw form is ``dict[str, list[Any]]``: each field name maps to all of its
values in file order, which is what both parsers naturally produce and what
proto2 semantics are defined on (a singular field's *last* value wins; a
singular message given twice is *merged*).

What `normalize` gives back, per field of a known message:

* repeated field -> a list (``[]`` when absent);
* singular scalar -> its last value, coerced to the field's Python type; float
  fields are rounded to float32, because that is what a caffemodel stores and
  what Caffe computes with, so ``alpha: 0.1`` in text equals the binary value;
* singular message -> a normalized dict, absent when not given;
* absent scalar -> Caffe's default: the ``[default = ...]`` of the proto, else
  the proto2 implicit one (0, 0.0, false, "", the first enum value), except for
  the fields in `PRESENCE_MEANINGFUL`, which stay absent because Caffe asks
  ``has_x()`` before using them (``kernel_h`` overrides ``kernel_size`` only
  when given, ``use_global_stats`` defaults by phase, ...);
* fields the schema does not know (custom forks) are kept: one value as the
  value, several as a list.

Sources of the facts (field numbers, types, defaults, enum values): BVLC Caffe
master ``src/caffe/proto/caffe.proto`` (including ``swish_param`` = 147,
``clip_param`` = 148 and ``PoolingParameter.round_mode``), the ``ssd`` branch
of weiliu89/caffe for the SSD layers (numbers 200-207, which do not collide with
BVLC's 100-148) and its additions to ``TransformationParameter``, and Caffe's
``upgrade_proto.cpp`` for the V1 and V0 layer type names.
``V1LayerParameter`` field 1 holds a whole ``V0LayerParameter``; it is in
`MESSAGES` too (without its blobs, which go through the blob decoder), so V0
nets can be decoded the same way. `BlobProto` is listed for completeness; its
weights belong to the dedicated blob decoder, not to `normalize`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from caffeport.errors import CaffeportError, ModelStructureError

__all__ = [
    "ENUMS",
    "LAYER_PARAMS",
    "MESSAGES",
    "PARAM_KEY_BY_NAME",
    "PRESENCE_MEANINGFUL",
    "V0_LAYER_TYPES",
    "V1_LAYER_PARAMS",
    "V1_LAYER_TYPES",
    "V1_TYPE_NUMBERS",
    "FieldSpec",
    "Kind",
    "enum_name",
    "field_by_name",
    "normalize",
]

Kind = Literal[
    "int32",
    "int64",
    "uint32",
    "uint64",
    "sint32",
    "sint64",
    "bool",
    "enum",
    "float",
    "double",
    "string",
    "bytes",
    "message",
]


@dataclass(frozen=True)
class FieldSpec:
    """One field of a message, as the proto declares it.

    ``default`` is the proto's explicit ``[default = ...]`` (enum defaults as
    the value's name), or ``None`` when the proto declares none; `normalize`
    works out the implicit proto2 default itself. ``type_name`` names the
    nested message (a key of `MESSAGES`) for kind ``"message"`` and the enum (a
    key of `ENUMS`) for kind ``"enum"``.
    """

    number: int
    name: str
    kind: Kind
    repeated: bool = False
    default: Any = None
    type_name: str | None = None


# --------------------------------------------------------------------------
# Compact constructors, so the table below reads like a field list.


def _opt(number: int, name: str, kind: Kind, default: Any = None) -> FieldSpec:
    return FieldSpec(number, name, kind, default=default)


def _rep(number: int, name: str, kind: Kind) -> FieldSpec:
    return FieldSpec(number, name, kind, repeated=True)


def _enum(
    number: int, name: str, enum: str, default: str | None = None, *, repeated: bool = False
) -> FieldSpec:
    return FieldSpec(number, name, "enum", repeated=repeated, default=default, type_name=enum)


def _sub(number: int, name: str, message: str, *, repeated: bool = False) -> FieldSpec:
    return FieldSpec(number, name, "message", repeated=repeated, type_name=message)


def _message(*fields: FieldSpec) -> dict[int, FieldSpec]:
    return {spec.number: spec for spec in fields}


# --------------------------------------------------------------------------
# Enums. All the Engine enums of upstream Caffe have the same values, as do
# all the PoolMethod enums (Pooling, SPP, V0), so each is one entry. Values are
# listed in declaration order: the first one is the proto2 implicit default.

_ENGINE: Final = {0: "DEFAULT", 1: "CAFFE", 2: "CUDNN"}

ENUMS: dict[str, dict[int, str]] = {
    "VarianceNorm": {0: "FAN_IN", 1: "FAN_OUT", 2: "AVERAGE"},
    "Engine": _ENGINE,
    "PoolMethod": {0: "MAX", 1: "AVE", 2: "STOCHASTIC"},
    "RoundMode": {0: "CEIL", 1: "FLOOR"},
    "NormRegion": {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"},
    "EltwiseOp": {0: "PROD", 1: "SUM", 2: "MAX"},
    "ReductionOp": {1: "SUM", 2: "ASUM", 3: "SUMSQ", 4: "MEAN"},
    "NormalizationMode": {0: "FULL", 1: "VALID", 2: "BATCH_SIZE", 3: "NONE"},
    "DB": {0: "LEVELDB", 1: "LMDB"},
    "Norm": {1: "L1", 2: "L2"},
    # SSD
    "CodeType": {1: "CORNER", 2: "CENTER_SIZE", 3: "CORNER_SIZE"},
    "LocLossType": {0: "L2", 1: "SMOOTH_L1"},
    "ConfLossType": {0: "SOFTMAX", 1: "LOGISTIC"},
    "MatchType": {0: "BIPARTITE", 1: "PER_PREDICTION"},
    "MiningType": {0: "NONE", 1: "MAX_NEGATIVE", 2: "HARD_EXAMPLE"},
    "VideoType": {0: "WEBCAM", 1: "VIDEO"},
    "AnnotationType": {0: "BBOX"},
    "EmitType": {0: "CENTER", 1: "MIN_OVERLAP"},
    "Resize_mode": {1: "WARP", 2: "FIT_SMALL_SIZE", 3: "FIT_LARGE_SIZE_AND_PAD"},
    "Pad_mode": {1: "CONSTANT", 2: "MIRRORED", 3: "REPEAT_NEAREST"},
    "Interp_mode": {1: "LINEAR", 2: "AREA", 3: "NEAREST", 4: "CUBIC", 5: "LANCZOS4"},
}

# --------------------------------------------------------------------------
# Messages: field number -> spec. Types are upstream's (uint32/int32); forks
# that widened them to 64 bits encode identically for in-range values.

MESSAGES: dict[str, dict[int, FieldSpec]] = {
    # ---- shared building blocks
    "BlobShape": _message(_rep(1, "dim", "int64")),
    "BlobProto": _message(
        _opt(1, "num", "int32", 0),
        _opt(2, "channels", "int32", 0),
        _opt(3, "height", "int32", 0),
        _opt(4, "width", "int32", 0),
        _rep(5, "data", "float"),
        _rep(6, "diff", "float"),
        _sub(7, "shape", "BlobShape"),
        _rep(8, "double_data", "double"),
        _rep(9, "double_diff", "double"),
    ),
    "FillerParameter": _message(
        _opt(1, "type", "string", "constant"),
        _opt(2, "value", "float", 0.0),
        _opt(3, "min", "float", 0.0),
        _opt(4, "max", "float", 1.0),
        _opt(5, "mean", "float", 0.0),
        _opt(6, "std", "float", 1.0),
        _opt(7, "sparse", "int32", -1),
        _enum(8, "variance_norm", "VarianceNorm", "FAN_IN"),
    ),
    # ---- LayerParameter *_param messages (BVLC)
    "TransformationParameter": _message(
        _opt(1, "scale", "float", 1.0),
        _opt(2, "mirror", "bool", False),
        _opt(3, "crop_size", "uint32", 0),
        _opt(4, "mean_file", "string"),
        _rep(5, "mean_value", "float"),
        _opt(6, "force_color", "bool", False),
        _opt(7, "force_gray", "bool", False),
        # SSD additions, numbers free in BVLC
        _sub(8, "resize_param", "ResizeParameter"),
        _sub(9, "noise_param", "NoiseParameter"),
        _sub(10, "emit_constraint", "EmitConstraint"),
        _opt(11, "crop_h", "uint32", 0),
        _opt(12, "crop_w", "uint32", 0),
        _sub(13, "distort_param", "DistortionParameter"),
        _sub(14, "expand_param", "ExpansionParameter"),
    ),
    "LossParameter": _message(
        _opt(1, "ignore_label", "int32"),
        _opt(2, "normalize", "bool"),
        _enum(3, "normalization", "NormalizationMode", "VALID"),
    ),
    "AccuracyParameter": _message(
        _opt(1, "top_k", "uint32", 1),
        _opt(2, "axis", "int32", 1),
        _opt(3, "ignore_label", "int32"),
    ),
    "ArgMaxParameter": _message(
        _opt(1, "out_max_val", "bool", False),
        _opt(2, "top_k", "uint32", 1),
        _opt(3, "axis", "int32"),
    ),
    "BatchNormParameter": _message(
        _opt(1, "use_global_stats", "bool"),
        _opt(2, "moving_average_fraction", "float", 0.999),
        _opt(3, "eps", "float", 1e-5),
    ),
    "BiasParameter": _message(
        _opt(1, "axis", "int32", 1),
        _opt(2, "num_axes", "int32", 1),
        _sub(3, "filler", "FillerParameter"),
    ),
    "ClipParameter": _message(
        _opt(1, "min", "float"),  # required in the proto
        _opt(2, "max", "float"),  # required in the proto
    ),
    "ConcatParameter": _message(
        _opt(1, "concat_dim", "uint32", 1),
        _opt(2, "axis", "int32", 1),
    ),
    "ContrastiveLossParameter": _message(
        _opt(1, "margin", "float", 1.0),
        _opt(2, "legacy_version", "bool", False),
    ),
    "ConvolutionParameter": _message(
        _opt(1, "num_output", "uint32"),
        _opt(2, "bias_term", "bool", True),
        _rep(3, "pad", "uint32"),
        _rep(4, "kernel_size", "uint32"),
        _opt(5, "group", "uint32", 1),
        _rep(6, "stride", "uint32"),
        _sub(7, "weight_filler", "FillerParameter"),
        _sub(8, "bias_filler", "FillerParameter"),
        _opt(9, "pad_h", "uint32", 0),
        _opt(10, "pad_w", "uint32", 0),
        _opt(11, "kernel_h", "uint32"),
        _opt(12, "kernel_w", "uint32"),
        _opt(13, "stride_h", "uint32"),
        _opt(14, "stride_w", "uint32"),
        _enum(15, "engine", "Engine", "DEFAULT"),
        _opt(16, "axis", "int32", 1),
        _opt(17, "force_nd_im2col", "bool", False),
        _rep(18, "dilation", "uint32"),
    ),
    "CropParameter": _message(
        _opt(1, "axis", "int32", 2),
        _rep(2, "offset", "uint32"),
    ),
    "DataParameter": _message(
        _opt(1, "source", "string"),
        _opt(2, "scale", "float", 1.0),
        _opt(3, "mean_file", "string"),
        _opt(4, "batch_size", "uint32"),
        _opt(5, "crop_size", "uint32", 0),
        _opt(6, "mirror", "bool", False),
        _opt(7, "rand_skip", "uint32", 0),
        _enum(8, "backend", "DB", "LEVELDB"),
        _opt(9, "force_encoded_color", "bool", False),
        _opt(10, "prefetch", "uint32", 4),
    ),
    "DropoutParameter": _message(_opt(1, "dropout_ratio", "float", 0.5)),
    "DummyDataParameter": _message(
        _sub(1, "data_filler", "FillerParameter", repeated=True),
        _rep(2, "num", "uint32"),
        _rep(3, "channels", "uint32"),
        _rep(4, "height", "uint32"),
        _rep(5, "width", "uint32"),
        _sub(6, "shape", "BlobShape", repeated=True),
    ),
    "EltwiseParameter": _message(
        _enum(1, "operation", "EltwiseOp", "SUM"),
        _rep(2, "coeff", "float"),
        _opt(3, "stable_prod_grad", "bool", True),
    ),
    "ELUParameter": _message(_opt(1, "alpha", "float", 1.0)),
    "EmbedParameter": _message(
        _opt(1, "num_output", "uint32"),
        _opt(2, "input_dim", "uint32"),
        _opt(3, "bias_term", "bool", True),
        _sub(4, "weight_filler", "FillerParameter"),
        _sub(5, "bias_filler", "FillerParameter"),
    ),
    "ExpParameter": _message(
        _opt(1, "base", "float", -1.0),
        _opt(2, "scale", "float", 1.0),
        _opt(3, "shift", "float", 0.0),
    ),
    "FlattenParameter": _message(
        _opt(1, "axis", "int32", 1),
        _opt(2, "end_axis", "int32", -1),
    ),
    "HDF5DataParameter": _message(
        _opt(1, "source", "string"),
        _opt(2, "batch_size", "uint32"),
        _opt(3, "shuffle", "bool", False),
    ),
    "HDF5OutputParameter": _message(_opt(1, "file_name", "string")),
    "HingeLossParameter": _message(_enum(1, "norm", "Norm", "L1")),
    "ImageDataParameter": _message(
        _opt(1, "source", "string"),
        _opt(2, "scale", "float", 1.0),
        _opt(3, "mean_file", "string"),
        _opt(4, "batch_size", "uint32", 1),
        _opt(5, "crop_size", "uint32", 0),
        _opt(6, "mirror", "bool", False),
        _opt(7, "rand_skip", "uint32", 0),
        _opt(8, "shuffle", "bool", False),
        _opt(9, "new_height", "uint32", 0),
        _opt(10, "new_width", "uint32", 0),
        _opt(11, "is_color", "bool", True),
        _opt(12, "root_folder", "string", ""),
    ),
    "InfogainLossParameter": _message(
        _opt(1, "source", "string"),
        _opt(2, "axis", "int32", 1),
    ),
    "InnerProductParameter": _message(
        _opt(1, "num_output", "uint32"),
        _opt(2, "bias_term", "bool", True),
        _sub(3, "weight_filler", "FillerParameter"),
        _sub(4, "bias_filler", "FillerParameter"),
        _opt(5, "axis", "int32", 1),
        _opt(6, "transpose", "bool", False),
    ),
    "InputParameter": _message(_sub(1, "shape", "BlobShape", repeated=True)),
    "LogParameter": _message(
        _opt(1, "base", "float", -1.0),
        _opt(2, "scale", "float", 1.0),
        _opt(3, "shift", "float", 0.0),
    ),
    "LRNParameter": _message(
        _opt(1, "local_size", "uint32", 5),
        _opt(2, "alpha", "float", 1.0),
        _opt(3, "beta", "float", 0.75),
        _enum(4, "norm_region", "NormRegion", "ACROSS_CHANNELS"),
        _opt(5, "k", "float", 1.0),
        _enum(6, "engine", "Engine", "DEFAULT"),
    ),
    "MemoryDataParameter": _message(
        _opt(1, "batch_size", "uint32"),
        _opt(2, "channels", "uint32"),
        _opt(3, "height", "uint32"),
        _opt(4, "width", "uint32"),
    ),
    "MVNParameter": _message(
        _opt(1, "normalize_variance", "bool", True),
        _opt(2, "across_channels", "bool", False),
        _opt(3, "eps", "float", 1e-9),
    ),
    "ParameterParameter": _message(_sub(1, "shape", "BlobShape")),
    "PoolingParameter": _message(
        _enum(1, "pool", "PoolMethod", "MAX"),
        _opt(2, "kernel_size", "uint32"),
        _opt(3, "stride", "uint32", 1),
        _opt(4, "pad", "uint32", 0),
        _opt(5, "kernel_h", "uint32"),
        _opt(6, "kernel_w", "uint32"),
        _opt(7, "stride_h", "uint32"),
        _opt(8, "stride_w", "uint32"),
        _opt(9, "pad_h", "uint32", 0),
        _opt(10, "pad_w", "uint32", 0),
        _enum(11, "engine", "Engine", "DEFAULT"),
        _opt(12, "global_pooling", "bool", False),
        _enum(13, "round_mode", "RoundMode", "CEIL"),
    ),
    "PowerParameter": _message(
        _opt(1, "power", "float", 1.0),
        _opt(2, "scale", "float", 1.0),
        _opt(3, "shift", "float", 0.0),
    ),
    "PReLUParameter": _message(
        _sub(1, "filler", "FillerParameter"),
        _opt(2, "channel_shared", "bool", False),
    ),
    "PythonParameter": _message(
        _opt(1, "module", "string"),
        _opt(2, "layer", "string"),
        _opt(3, "param_str", "string", ""),
        _opt(4, "share_in_parallel", "bool", False),
    ),
    "RecurrentParameter": _message(
        _opt(1, "num_output", "uint32", 0),
        _sub(2, "weight_filler", "FillerParameter"),
        _sub(3, "bias_filler", "FillerParameter"),
        _opt(4, "debug_info", "bool", False),
        _opt(5, "expose_hidden", "bool", False),
    ),
    "ReductionParameter": _message(
        _enum(1, "operation", "ReductionOp", "SUM"),
        _opt(2, "axis", "int32", 0),
        _opt(3, "coeff", "float", 1.0),
    ),
    "ReLUParameter": _message(
        _opt(1, "negative_slope", "float", 0.0),
        _enum(2, "engine", "Engine", "DEFAULT"),
    ),
    "ReshapeParameter": _message(
        _sub(1, "shape", "BlobShape"),
        _opt(2, "axis", "int32", 0),
        _opt(3, "num_axes", "int32", -1),
    ),
    "ScaleParameter": _message(
        _opt(1, "axis", "int32", 1),
        _opt(2, "num_axes", "int32", 1),
        _sub(3, "filler", "FillerParameter"),
        _opt(4, "bias_term", "bool", False),
        _sub(5, "bias_filler", "FillerParameter"),
    ),
    "SigmoidParameter": _message(_enum(1, "engine", "Engine", "DEFAULT")),
    "SliceParameter": _message(
        _opt(1, "slice_dim", "uint32", 1),
        _rep(2, "slice_point", "uint32"),
        _opt(3, "axis", "int32", 1),
    ),
    "SoftmaxParameter": _message(
        _enum(1, "engine", "Engine", "DEFAULT"),
        _opt(2, "axis", "int32", 1),
    ),
    "SPPParameter": _message(
        _opt(1, "pyramid_height", "uint32"),
        _enum(2, "pool", "PoolMethod", "MAX"),
        _enum(6, "engine", "Engine", "DEFAULT"),
    ),
    "SwishParameter": _message(_opt(1, "beta", "float", 1.0)),
    "TanHParameter": _message(_enum(1, "engine", "Engine", "DEFAULT")),
    "ThresholdParameter": _message(_opt(1, "threshold", "float", 0.0)),
    "TileParameter": _message(
        _opt(1, "axis", "int32", 1),
        _opt(2, "tiles", "int32"),
    ),
    "WindowDataParameter": _message(
        _opt(1, "source", "string"),
        _opt(2, "scale", "float", 1.0),
        _opt(3, "mean_file", "string"),
        _opt(4, "batch_size", "uint32"),
        _opt(5, "crop_size", "uint32", 0),
        _opt(6, "mirror", "bool", False),
        _opt(7, "fg_threshold", "float", 0.5),
        _opt(8, "bg_threshold", "float", 0.5),
        _opt(9, "fg_fraction", "float", 0.25),
        _opt(10, "context_pad", "uint32", 0),
        _opt(11, "crop_mode", "string", "warp"),
        _opt(12, "cache_images", "bool", False),
        _opt(13, "root_folder", "string", ""),
    ),
    # ---- SSD (weiliu89/caffe, ssd branch)
    "AnnotatedDataParameter": _message(
        _sub(1, "batch_sampler", "BatchSampler", repeated=True),
        _opt(2, "label_map_file", "string"),
        _enum(3, "anno_type", "AnnotationType"),
    ),
    "BatchSampler": _message(
        _opt(1, "use_original_image", "bool", True),
        _sub(2, "sampler", "Sampler"),
        _sub(3, "sample_constraint", "SampleConstraint"),
        _opt(4, "max_sample", "uint32"),
        _opt(5, "max_trials", "uint32", 100),
    ),
    "Sampler": _message(
        _opt(1, "min_scale", "float", 1.0),
        _opt(2, "max_scale", "float", 1.0),
        _opt(3, "min_aspect_ratio", "float", 1.0),
        _opt(4, "max_aspect_ratio", "float", 1.0),
    ),
    "SampleConstraint": _message(
        _opt(1, "min_jaccard_overlap", "float"),
        _opt(2, "max_jaccard_overlap", "float"),
        _opt(3, "min_sample_coverage", "float"),
        _opt(4, "max_sample_coverage", "float"),
        _opt(5, "min_object_coverage", "float"),
        _opt(6, "max_object_coverage", "float"),
    ),
    "EmitConstraint": _message(
        _enum(1, "emit_type", "EmitType", "CENTER"),
        _opt(2, "emit_overlap", "float"),
    ),
    "ResizeParameter": _message(
        _opt(1, "prob", "float", 1.0),
        _enum(2, "resize_mode", "Resize_mode", "WARP"),
        _opt(3, "height", "uint32", 0),
        _opt(4, "width", "uint32", 0),
        _enum(5, "pad_mode", "Pad_mode", "CONSTANT"),
        _rep(6, "pad_value", "float"),
        _enum(7, "interp_mode", "Interp_mode", repeated=True),
        _opt(8, "height_scale", "uint32", 0),
        _opt(9, "width_scale", "uint32", 0),
    ),
    "SaltPepperParameter": _message(
        _opt(1, "fraction", "float", 0.0),
        _rep(2, "value", "float"),
    ),
    "NoiseParameter": _message(
        _opt(1, "prob", "float", 0.0),
        _opt(2, "hist_eq", "bool", False),
        _opt(3, "inverse", "bool", False),
        _opt(4, "decolorize", "bool", False),
        _opt(5, "gauss_blur", "bool", False),
        _opt(6, "jpeg", "float", -1.0),
        _opt(7, "posterize", "bool", False),
        _opt(8, "erode", "bool", False),
        _opt(9, "saltpepper", "bool", False),
        _sub(10, "saltpepper_param", "SaltPepperParameter"),
        _opt(11, "clahe", "bool", False),
        _opt(12, "convert_to_hsv", "bool", False),
        _opt(13, "convert_to_lab", "bool", False),
    ),
    "DistortionParameter": _message(
        _opt(1, "brightness_prob", "float", 0.0),
        _opt(2, "brightness_delta", "float", 0.0),
        _opt(3, "contrast_prob", "float", 0.0),
        _opt(4, "contrast_lower", "float", 0.0),
        _opt(5, "contrast_upper", "float", 0.0),
        _opt(6, "hue_prob", "float", 0.0),
        _opt(7, "hue_delta", "float", 0.0),
        _opt(8, "saturation_prob", "float", 0.0),
        _opt(9, "saturation_lower", "float", 0.0),
        _opt(10, "saturation_upper", "float", 0.0),
        _opt(11, "random_order_prob", "float", 0.0),
    ),
    "ExpansionParameter": _message(
        _opt(1, "prob", "float", 1.0),
        _opt(2, "max_expand_ratio", "float", 1.0),
    ),
    "DetectionEvaluateParameter": _message(
        _opt(1, "num_classes", "uint32"),
        _opt(2, "background_label_id", "uint32", 0),
        _opt(3, "overlap_threshold", "float", 0.5),
        _opt(4, "evaluate_difficult_gt", "bool", True),
        _opt(5, "name_size_file", "string"),
        _sub(6, "resize_param", "ResizeParameter"),
    ),
    "NonMaximumSuppressionParameter": _message(
        _opt(1, "nms_threshold", "float", 0.3),
        _opt(2, "top_k", "int32"),
        _opt(3, "eta", "float", 1.0),
    ),
    "SaveOutputParameter": _message(
        _opt(1, "output_directory", "string"),
        _opt(2, "output_name_prefix", "string"),
        _opt(3, "output_format", "string"),
        _opt(4, "label_map_file", "string"),
        _opt(5, "name_size_file", "string"),
        _opt(6, "num_test_image", "uint32"),
        _sub(7, "resize_param", "ResizeParameter"),
    ),
    "DetectionOutputParameter": _message(
        _opt(1, "num_classes", "uint32"),
        _opt(2, "share_location", "bool", True),
        _opt(3, "background_label_id", "int32", 0),
        _sub(4, "nms_param", "NonMaximumSuppressionParameter"),
        _sub(5, "save_output_param", "SaveOutputParameter"),
        _enum(6, "code_type", "CodeType", "CORNER"),
        _opt(7, "keep_top_k", "int32", -1),
        _opt(8, "variance_encoded_in_target", "bool", False),
        _opt(9, "confidence_threshold", "float"),
        _opt(10, "visualize", "bool", False),
        _opt(11, "visualize_threshold", "float"),
        _opt(12, "save_file", "string"),
    ),
    "MultiBoxLossParameter": _message(
        _enum(1, "loc_loss_type", "LocLossType", "SMOOTH_L1"),
        _enum(2, "conf_loss_type", "ConfLossType", "SOFTMAX"),
        _opt(3, "loc_weight", "float", 1.0),
        _opt(4, "num_classes", "uint32"),
        _opt(5, "share_location", "bool", True),
        _enum(6, "match_type", "MatchType", "PER_PREDICTION"),
        _opt(7, "overlap_threshold", "float", 0.5),
        _opt(8, "use_prior_for_matching", "bool", True),
        _opt(9, "background_label_id", "uint32", 0),
        _opt(10, "use_difficult_gt", "bool", True),
        _opt(11, "do_neg_mining", "bool"),
        _opt(12, "neg_pos_ratio", "float", 3.0),
        _opt(13, "neg_overlap", "float", 0.5),
        _enum(14, "code_type", "CodeType", "CORNER"),
        _opt(16, "encode_variance_in_target", "bool", False),
        _opt(17, "map_object_to_agnostic", "bool", False),
        _opt(18, "ignore_cross_boundary_bbox", "bool", False),
        _opt(19, "bp_inside", "bool", False),
        _enum(20, "mining_type", "MiningType", "MAX_NEGATIVE"),
        _sub(21, "nms_param", "NonMaximumSuppressionParameter"),
        _opt(22, "sample_size", "int32", 64),
        _opt(23, "use_prior_for_nms", "bool", False),
    ),
    "NormalizeParameter": _message(
        _opt(1, "across_spatial", "bool", True),
        _sub(2, "scale_filler", "FillerParameter"),
        _opt(3, "channel_shared", "bool", True),
        _opt(4, "eps", "float", 1e-10),
    ),
    "PermuteParameter": _message(_rep(1, "order", "uint32")),
    "PriorBoxParameter": _message(
        _rep(1, "min_size", "float"),
        _rep(2, "max_size", "float"),
        _rep(3, "aspect_ratio", "float"),
        _opt(4, "flip", "bool", True),
        _opt(5, "clip", "bool", False),
        _rep(6, "variance", "float"),
        _opt(7, "img_size", "uint32"),
        _opt(8, "img_h", "uint32"),
        _opt(9, "img_w", "uint32"),
        _opt(10, "step", "float"),
        _opt(11, "step_h", "float"),
        _opt(12, "step_w", "float"),
        _opt(13, "offset", "float", 0.5),
    ),
    "VideoDataParameter": _message(
        _enum(1, "video_type", "VideoType", "WEBCAM"),
        _opt(2, "device_id", "int32", 0),
        _opt(3, "video_file", "string"),
        _opt(4, "skip_frames", "uint32", 0),
    ),
    # ---- the V0 layer, held in V1LayerParameter field 1
    "V0LayerParameter": _message(
        _opt(1, "name", "string"),
        _opt(2, "type", "string"),
        _opt(3, "num_output", "uint32"),
        _opt(4, "biasterm", "bool", True),
        _sub(5, "weight_filler", "FillerParameter"),
        _sub(6, "bias_filler", "FillerParameter"),
        _opt(7, "pad", "uint32", 0),
        _opt(8, "kernelsize", "uint32"),
        _opt(9, "group", "uint32", 1),
        _opt(10, "stride", "uint32", 1),
        _enum(11, "pool", "PoolMethod", "MAX"),
        _opt(12, "dropout_ratio", "float", 0.5),
        _opt(13, "local_size", "uint32", 5),
        _opt(14, "alpha", "float", 1.0),
        _opt(15, "beta", "float", 0.75),
        _opt(16, "source", "string"),
        _opt(17, "scale", "float", 1.0),
        _opt(18, "meanfile", "string"),
        _opt(19, "batchsize", "uint32"),
        _opt(20, "cropsize", "uint32", 0),
        _opt(21, "mirror", "bool", False),
        _opt(22, "k", "float", 1.0),
        # blobs (50, repeated BlobProto) is left out on purpose: weights are
        # decoded straight into numpy by blob_proto, and a schema entry would
        # make the generic message decoder expand them into Python lists.
        _rep(51, "blobs_lr", "float"),
        _rep(52, "weight_decay", "float"),
        _opt(53, "rand_skip", "uint32", 0),
        _opt(54, "det_fg_threshold", "float", 0.5),
        _opt(55, "det_bg_threshold", "float", 0.5),
        _opt(56, "det_fg_fraction", "float", 0.25),
        _opt(58, "det_context_pad", "uint32", 0),
        _opt(59, "det_crop_mode", "string", "warp"),
        _opt(60, "new_num", "int32", 0),
        _opt(61, "new_channels", "int32", 0),
        _opt(62, "new_height", "int32", 0),
        _opt(63, "new_width", "int32", 0),
        _opt(64, "shuffle_images", "bool", False),
        _opt(65, "concat_dim", "uint32", 1),
        _sub(1001, "hdf5_output_param", "HDF5OutputParameter"),
    ),
}

# Fields that stay absent when not given, although the proto (or proto2) has a
# default for them: Caffe reads them only after asking has_x(), so a filled-in
# default would change what the layer means, or hide which of two alternative
# fields the file used.
PRESENCE_MEANINGFUL: dict[str, frozenset[str]] = {
    # An _h/_w pair overrides the square field only when given; a missing
    # num_output is an error Caffe reports, not a zero.
    "ConvolutionParameter": frozenset(
        {"num_output", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w"}
    ),
    "PoolingParameter": frozenset(
        {"kernel_size", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w"}
    ),
    "InnerProductParameter": frozenset({"num_output"}),
    "EmbedParameter": frozenset({"num_output", "input_dim"}),
    "RecurrentParameter": frozenset({"num_output"}),
    # Absent means "by phase": global stats at TEST, batch stats at TRAIN.
    "BatchNormParameter": frozenset({"use_global_stats"}),
    # The deprecated concat_dim / slice_dim win over axis when given.
    "ConcatParameter": frozenset({"concat_dim"}),
    "SliceParameter": frozenset({"slice_dim"}),
    # Absent axis: ArgMax works on the flattened trailing axes.
    "ArgMaxParameter": frozenset({"axis"}),
    # Absent: no label is ignored (any value, 0 included, is a real label).
    "AccuracyParameter": frozenset({"ignore_label"}),
    # The loss layers pick their own normalization when neither is given.
    "LossParameter": frozenset({"ignore_label", "normalize", "normalization"}),
    # Blob::FromProto uses the legacy 4-D dims only if one of them is set.
    "BlobProto": frozenset({"num", "channels", "height", "width"}),
    # Required in the proto: no default exists; absent means a broken file.
    "ClipParameter": frozenset({"min", "max"}),
    # A mean file is loaded only when named (and may not come with mean_value).
    "TransformationParameter": frozenset({"mean_file"}),
    # The data upgrade moves these into transform_param only when given.
    "DataParameter": frozenset({"scale", "mean_file", "crop_size", "mirror"}),
    "ImageDataParameter": frozenset({"scale", "mean_file", "crop_size", "mirror"}),
    "WindowDataParameter": frozenset({"scale", "mean_file", "crop_size", "mirror"}),
    # SSD: each of these switches a behaviour on by being present.
    "AnnotatedDataParameter": frozenset({"anno_type"}),
    "BatchSampler": frozenset({"max_sample"}),
    "SampleConstraint": frozenset(spec.name for spec in MESSAGES["SampleConstraint"].values()),
    "NonMaximumSuppressionParameter": frozenset({"top_k"}),
    "DetectionOutputParameter": frozenset({"confidence_threshold", "visualize_threshold"}),
    "MultiBoxLossParameter": frozenset({"do_neg_mining"}),
    "PriorBoxParameter": frozenset({"img_size", "img_h", "img_w", "step", "step_h", "step_w"}),
    # The V0 upgrade copies exactly the fields that were given.
    "V0LayerParameter": frozenset(
        spec.name for spec in MESSAGES["V0LayerParameter"].values() if not spec.repeated
    ),
}

# --------------------------------------------------------------------------
# Where each *_param lives in a layer.

LAYER_PARAMS: dict[int, tuple[str, str]] = {
    100: ("transform_param", "TransformationParameter"),
    101: ("loss_param", "LossParameter"),
    102: ("accuracy_param", "AccuracyParameter"),
    103: ("argmax_param", "ArgMaxParameter"),
    104: ("concat_param", "ConcatParameter"),
    105: ("contrastive_loss_param", "ContrastiveLossParameter"),
    106: ("convolution_param", "ConvolutionParameter"),
    107: ("data_param", "DataParameter"),
    108: ("dropout_param", "DropoutParameter"),
    109: ("dummy_data_param", "DummyDataParameter"),
    110: ("eltwise_param", "EltwiseParameter"),
    111: ("exp_param", "ExpParameter"),
    112: ("hdf5_data_param", "HDF5DataParameter"),
    113: ("hdf5_output_param", "HDF5OutputParameter"),
    114: ("hinge_loss_param", "HingeLossParameter"),
    115: ("image_data_param", "ImageDataParameter"),
    116: ("infogain_loss_param", "InfogainLossParameter"),
    117: ("inner_product_param", "InnerProductParameter"),
    118: ("lrn_param", "LRNParameter"),
    119: ("memory_data_param", "MemoryDataParameter"),
    120: ("mvn_param", "MVNParameter"),
    121: ("pooling_param", "PoolingParameter"),
    122: ("power_param", "PowerParameter"),
    123: ("relu_param", "ReLUParameter"),
    124: ("sigmoid_param", "SigmoidParameter"),
    125: ("softmax_param", "SoftmaxParameter"),
    126: ("slice_param", "SliceParameter"),
    127: ("tanh_param", "TanHParameter"),
    128: ("threshold_param", "ThresholdParameter"),
    129: ("window_data_param", "WindowDataParameter"),
    130: ("python_param", "PythonParameter"),
    131: ("prelu_param", "PReLUParameter"),
    132: ("spp_param", "SPPParameter"),
    133: ("reshape_param", "ReshapeParameter"),
    134: ("log_param", "LogParameter"),
    135: ("flatten_param", "FlattenParameter"),
    136: ("reduction_param", "ReductionParameter"),
    137: ("embed_param", "EmbedParameter"),
    138: ("tile_param", "TileParameter"),
    139: ("batch_norm_param", "BatchNormParameter"),
    140: ("elu_param", "ELUParameter"),
    141: ("bias_param", "BiasParameter"),
    142: ("scale_param", "ScaleParameter"),
    143: ("input_param", "InputParameter"),
    144: ("crop_param", "CropParameter"),
    145: ("parameter_param", "ParameterParameter"),
    146: ("recurrent_param", "RecurrentParameter"),
    147: ("swish_param", "SwishParameter"),
    148: ("clip_param", "ClipParameter"),
    # SSD
    200: ("annotated_data_param", "AnnotatedDataParameter"),
    201: ("multibox_loss_param", "MultiBoxLossParameter"),
    202: ("permute_param", "PermuteParameter"),
    203: ("prior_box_param", "PriorBoxParameter"),
    204: ("detection_output_param", "DetectionOutputParameter"),
    205: ("detection_evaluate_param", "DetectionEvaluateParameter"),
    206: ("norm_param", "NormalizeParameter"),
    207: ("video_data_param", "VideoDataParameter"),
}

V1_LAYER_PARAMS: dict[int, tuple[str, str]] = {
    9: ("concat_param", "ConcatParameter"),
    10: ("convolution_param", "ConvolutionParameter"),
    11: ("data_param", "DataParameter"),
    12: ("dropout_param", "DropoutParameter"),
    13: ("hdf5_data_param", "HDF5DataParameter"),
    14: ("hdf5_output_param", "HDF5OutputParameter"),
    15: ("image_data_param", "ImageDataParameter"),
    16: ("infogain_loss_param", "InfogainLossParameter"),
    17: ("inner_product_param", "InnerProductParameter"),
    18: ("lrn_param", "LRNParameter"),
    19: ("pooling_param", "PoolingParameter"),
    20: ("window_data_param", "WindowDataParameter"),
    21: ("power_param", "PowerParameter"),
    22: ("memory_data_param", "MemoryDataParameter"),
    23: ("argmax_param", "ArgMaxParameter"),
    24: ("eltwise_param", "EltwiseParameter"),
    25: ("threshold_param", "ThresholdParameter"),
    26: ("dummy_data_param", "DummyDataParameter"),
    27: ("accuracy_param", "AccuracyParameter"),
    29: ("hinge_loss_param", "HingeLossParameter"),
    30: ("relu_param", "ReLUParameter"),
    31: ("slice_param", "SliceParameter"),
    34: ("mvn_param", "MVNParameter"),
    36: ("transform_param", "TransformationParameter"),
    37: ("tanh_param", "TanHParameter"),
    38: ("sigmoid_param", "SigmoidParameter"),
    39: ("softmax_param", "SoftmaxParameter"),
    40: ("contrastive_loss_param", "ContrastiveLossParameter"),
    41: ("exp_param", "ExpParameter"),
    42: ("loss_param", "LossParameter"),
}

PARAM_KEY_BY_NAME: dict[str, str] = {key: message for key, message in LAYER_PARAMS.values()} | {
    key: message for key, message in V1_LAYER_PARAMS.values()
}

# V1LayerParameter.LayerType value -> the type string UpgradeV1LayerType gives.
# NONE upgrades to the empty string, as in Caffe.
V1_LAYER_TYPES: dict[int, str] = {
    0: "",
    1: "Accuracy",
    2: "BNLL",
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    7: "EuclideanLoss",
    8: "Flatten",
    9: "HDF5Data",
    10: "HDF5Output",
    11: "Im2col",
    12: "ImageData",
    13: "InfogainLoss",
    14: "InnerProduct",
    15: "LRN",
    16: "MultinomialLogisticLoss",
    17: "Pooling",
    18: "ReLU",
    19: "Sigmoid",
    20: "Softmax",
    21: "SoftmaxWithLoss",
    22: "Split",
    23: "TanH",
    24: "WindowData",
    25: "Eltwise",
    26: "Power",
    27: "SigmoidCrossEntropyLoss",
    28: "HingeLoss",
    29: "MemoryData",
    30: "ArgMax",
    31: "Threshold",
    32: "DummyData",
    33: "Slice",
    34: "MVN",
    35: "AbsVal",
    36: "Silence",
    37: "ContrastiveLoss",
    38: "Exp",
    39: "Deconvolution",
}

# V1LayerParameter.LayerType name -> value, for V1 prototxts (which spell the
# type as the enum name: "type: CONVOLUTION").
V1_TYPE_NUMBERS: dict[str, int] = {
    "NONE": 0,
    "ACCURACY": 1,
    "BNLL": 2,
    "CONCAT": 3,
    "CONVOLUTION": 4,
    "DATA": 5,
    "DROPOUT": 6,
    "EUCLIDEAN_LOSS": 7,
    "FLATTEN": 8,
    "HDF5_DATA": 9,
    "HDF5_OUTPUT": 10,
    "IM2COL": 11,
    "IMAGE_DATA": 12,
    "INFOGAIN_LOSS": 13,
    "INNER_PRODUCT": 14,
    "LRN": 15,
    "MULTINOMIAL_LOGISTIC_LOSS": 16,
    "POOLING": 17,
    "RELU": 18,
    "SIGMOID": 19,
    "SOFTMAX": 20,
    "SOFTMAX_LOSS": 21,
    "SPLIT": 22,
    "TANH": 23,
    "WINDOW_DATA": 24,
    "ELTWISE": 25,
    "POWER": 26,
    "SIGMOID_CROSS_ENTROPY_LOSS": 27,
    "HINGE_LOSS": 28,
    "MEMORY_DATA": 29,
    "ARGMAX": 30,
    "THRESHOLD": 31,
    "DUMMY_DATA": 32,
    "SLICE": 33,
    "MVN": 34,
    "ABSVAL": 35,
    "SILENCE": 36,
    "CONTRASTIVE_LOSS": 37,
    "EXP": 38,
    "DECONVOLUTION": 39,
}

# V0LayerParameter.type -> V2 type, i.e. UpgradeV0LayerType followed by
# UpgradeV1LayerType. "padding" is the exception: Caffe never turns it into a
# layer but folds it into the pad of the conv/pool layer that reads its output
# (UpgradeV0PaddingLayers); a V0 upgrader must do the same.
V0_LAYER_TYPES: dict[str, str] = {
    "accuracy": "Accuracy",
    "bnll": "BNLL",
    "concat": "Concat",
    "conv": "Convolution",
    "data": "Data",
    "dropout": "Dropout",
    "euclidean_loss": "EuclideanLoss",
    "flatten": "Flatten",
    "hdf5_data": "HDF5Data",
    "hdf5_output": "HDF5Output",
    "im2col": "Im2col",
    "images": "ImageData",
    "infogain_loss": "InfogainLoss",
    "innerproduct": "InnerProduct",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MultinomialLogisticLoss",
    "padding": "Padding",
    "pool": "Pooling",
    "relu": "ReLU",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
    "softmax_loss": "SoftmaxWithLoss",
    "split": "Split",
    "tanh": "TanH",
    "window_data": "WindowData",
}


def field_by_name(message: str, name: str) -> FieldSpec | None:
    """The spec of ``message.name``, or ``None`` for an unknown message or field."""
    fields = _BY_NAME.get(message)
    return fields.get(name) if fields is not None else None


def enum_name(enum: str, value: int) -> str | int:
    """The name of ``value`` in ``enum``; an unknown value (a fork's) comes back as the int."""
    return ENUMS.get(enum, {}).get(value, value)


# --------------------------------------------------------------------------
# Coercion of one raw value to the Python type of its field.

_F32: Final = struct.Struct("<f")
_FLOAT_WORDS: Final = {
    "inf": math.inf,
    "infinity": math.inf,
    "-inf": -math.inf,
    "-infinity": -math.inf,
    "nan": math.nan,
    "-nan": math.nan,
}
_BOOL_WORDS: Final = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}
_INT_RANGES: Final = {
    "int32": (-(2**31), 2**31),
    "sint32": (-(2**31), 2**31),
    "int64": (-(2**63), 2**63),
    "sint64": (-(2**63), 2**63),
    "uint32": (0, 2**32),
    "uint64": (0, 2**64),
}


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (a decoder may hand those over)."""
    if type(value) in (int, float, str, bool):
        return value
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "shape", None) == () else value


def _to_float32(value: float) -> float:
    try:
        return float(_F32.unpack(_F32.pack(value))[0])
    except OverflowError:  # beyond float32: protobuf's text parser gives infinity too
        return math.copysign(math.inf, value)


def _to_double(message: str, spec: FieldSpec, value: Any) -> float:
    value = _plain(value)
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.lower() in _FLOAT_WORDS:
        return _FLOAT_WORDS[value.lower()]
    raise ModelStructureError(f"field {message}.{spec.name}: expected a number, got {value!r}")


def _to_float(message: str, spec: FieldSpec, value: Any) -> float:
    return _to_float32(_to_double(message, spec, value))


def _to_int(message: str, spec: FieldSpec, value: Any) -> int:
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ModelStructureError(f"field {message}.{spec.name}: expected an integer, got {value!r}")
    low, high = _INT_RANGES[spec.kind]
    if low <= value < high:
        return value
    if low < 0 and 2**63 <= value < 2**64 and value - 2**64 >= low:
        # A negative value as it travels on the wire: sign-extended to 64 bits.
        return value - 2**64
    raise ModelStructureError(f"field {message}.{spec.name}: {value} is out of range for {spec.kind}")


def _to_bool(message: str, spec: FieldSpec, value: Any) -> bool:
    value = _plain(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):  # binary varint: protobuf reads any non-zero as true
        return value != 0
    if isinstance(value, str) and value in _BOOL_WORDS:
        return _BOOL_WORDS[value]
    raise ModelStructureError(f"field {message}.{spec.name}: expected a boolean, got {value!r}")


def _to_enum(message: str, spec: FieldSpec, value: Any) -> str | int:
    value = _plain(value)
    enum = spec.type_name or ""
    values = ENUMS[enum]
    if isinstance(value, str):
        if value in _ENUM_NAMES[enum]:
            return value
        raise ModelStructureError(
            f"field {message}.{spec.name}: {value!r} is not a {enum} value "
            f"(allowed: {', '.join(values.values())})"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 2**63:  # a negative enum number, sign-extended on the wire
            value -= 2**64
        return values.get(value, value)
    raise ModelStructureError(f"field {message}.{spec.name}: expected an enum name or number, got {value!r}")


def _to_string(message: str, spec: FieldSpec, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    raise ModelStructureError(f"field {message}.{spec.name}: expected a string, got {value!r}")


def _to_bytes(message: str, spec: FieldSpec, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ModelStructureError(f"field {message}.{spec.name}: expected bytes, got {value!r}")


_Coerce = Callable[[str, FieldSpec, Any], Any]
_COERCE: Final[dict[str, _Coerce]] = {
    "int32": _to_int,
    "int64": _to_int,
    "uint32": _to_int,
    "uint64": _to_int,
    "sint32": _to_int,
    "sint64": _to_int,
    "bool": _to_bool,
    "enum": _to_enum,
    "float": _to_float,
    "double": _to_double,
    "string": _to_string,
    "bytes": _to_bytes,
}
_IMPLICIT: Final[dict[str, Any]] = {
    "bool": False,
    "float": 0.0,
    "double": 0.0,
    "string": "",
    "bytes": b"",
}


# --------------------------------------------------------------------------
# Lookup tables derived once from the schema, so normalize() does one dict
# lookup per field.

_ABSENT: Final = object()  # leave the field out
_NEW_LIST: Final = object()  # a fresh [] (never share a mutable default)

_BY_NAME: dict[str, dict[str, FieldSpec]] = {
    message: {spec.name: spec for spec in fields.values()} for message, fields in MESSAGES.items()
}
_ENUM_NAMES: dict[str, frozenset[str]] = {enum: frozenset(values.values()) for enum, values in ENUMS.items()}


def _fill_value(message: str, spec: FieldSpec) -> Any:
    """What an absent field becomes: `_ABSENT`, `_NEW_LIST` or the default value."""
    if spec.repeated:
        return _NEW_LIST
    if spec.kind == "message" or spec.name in PRESENCE_MEANINGFUL.get(message, ()):
        return _ABSENT
    if spec.default is not None:
        # Coerced like a given value, so "eps: 1e-5" and no eps at all agree
        # (both the float32 Caffe uses).
        return _COERCE[spec.kind](message, spec, spec.default)
    if spec.kind == "enum":
        return next(iter(ENUMS[spec.type_name or ""].values()))
    return _IMPLICIT.get(spec.kind, 0)


_PLAN: dict[str, tuple[tuple[FieldSpec, Any], ...]] = {
    message: tuple((spec, _fill_value(message, spec)) for _, spec in sorted(fields.items()))
    for message, fields in MESSAGES.items()
}


# --------------------------------------------------------------------------
# normalize


#: distinct values a repeated field's conversion remembers (see `_convert`)
_MEMO_SIZE = 256


def _values_of(values: Any) -> Sequence[Any]:
    """The occurrences of a field, flattening one level of ``[a, b]`` list syntax (read-only: often ``values`` itself).

    Not copied when already flat: a hostile ``[1, 1, ...]`` list is millions of values, and each
    copy would cost 8 bytes a value on top of the parse.
    """
    if not isinstance(values, (list, tuple)):
        return [values]
    if any(isinstance(value, (list, tuple)) for value in values):
        flat: list[Any] = []
        for value in values:
            flat.extend(value if isinstance(value, (list, tuple)) else [value])
        return flat
    return values


def _as_raw_message(message: str, spec: FieldSpec, value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    raise ModelStructureError(
        f"field {message}.{spec.name}: expected a {spec.type_name} message, got {value!r}"
    )


def merge_messages(messages: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Several occurrences of one singular message field, merged the proto2 way.

    Concatenating each field's values in order is exactly protobuf's merge once
    normalized: scalars then take the last value, repeated fields keep all, and
    nested messages merge in turn.
    """
    merged: dict[str, list[Any]] = {}
    for raw in messages:
        for name, values in raw.items():
            merged.setdefault(name, []).extend(_values_of(values))
    return merged


def _convert(message: str, spec: FieldSpec, values: list[Any]) -> Any:
    if spec.kind == "message":
        nested = spec.type_name or ""
        if spec.repeated:
            return [normalize(nested, _as_raw_message(message, spec, value)) for value in values]
        if len(values) == 1:
            return normalize(nested, _as_raw_message(message, spec, values[0]))
        return normalize(nested, merge_messages(_as_raw_message(message, spec, value) for value in values))
    coerce = _COERCE[spec.kind]
    if not spec.repeated:
        for value in values[:-1]:  # every occurrence is checked, the last one wins
            coerce(message, spec, value)
        return coerce(message, spec, values[-1])
    # Equal values share one converted object (a float is 24 bytes, a dense text list 2 bytes a value); the
    # memo is bounded, so a list of distinct values costs no more than without it. Only plain ints, strings and
    # non-zero floats are remembered, keyed with their type: 1, True and 1.0 are equal, and so are 0.0 and -0.0.
    memo: dict[tuple[type, Any], Any] = {}
    converted = []
    for value in values:
        kind = type(value)
        if kind is int or kind is str or (kind is float and value != 0):
            result = memo.get((kind, value), _ABSENT)
            if result is _ABSENT:
                result = coerce(message, spec, value)
                if len(memo) < _MEMO_SIZE:
                    memo[kind, value] = result
        else:
            result = coerce(message, spec, value)
        converted.append(result)
    return converted


def _collapse(value: Any) -> Any:
    """An unknown field's value: nested raw dicts with one-element lists unwrapped."""
    if isinstance(value, Mapping):
        return {name: _collapse_values(values) for name, values in value.items()}
    return value


def _collapse_values(values: Any) -> Any:
    if not isinstance(values, (list, tuple)):
        return _collapse(values)
    if len(values) == 1:
        return _collapse(values[0])
    return [_collapse(value) for value in values]


def normalize(message: str, raw: Mapping[str, list[Any]]) -> dict[str, Any]:
    """``raw`` (field name -> all its values in file order) as Caffe sees it.

    Known fields come first, in field-number order, so a layer read from text
    and from binary gives an equal dict with equal ordering; unknown fields
    follow in their input order. Never raises for an unknown message or field
    (both are kept); raises `ModelStructureError` for a value a known field
    cannot hold. ``raw`` is not modified.
    """
    plan = _PLAN.get(message)
    if plan is None:
        return {name: _collapse_values(values) for name, values in raw.items()}
    out: dict[str, Any] = {}
    seen = 0
    for spec, fill in plan:
        values = raw.get(spec.name)
        if values is not None:
            seen += 1
            occurrences = _values_of(values)
            if occurrences:
                out[spec.name] = _convert(message, spec, occurrences)
                continue
        if fill is _NEW_LIST:
            out[spec.name] = []
        elif fill is not _ABSENT:
            out[spec.name] = fill
    if seen < len(raw):
        known = _BY_NAME[message]
        for name, values in raw.items():
            if name not in known:
                out[name] = _collapse_values(values)
    return out


def normalize_params(occurrences: Mapping[str, list[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """A layer's ``*_param`` messages, each key's occurrences merged (proto2) and normalized.

    The one place both readers turn raw parameter messages into the plain
    dicts of `Layer.params`. A value a field cannot hold raises
    `ModelStructureError` whose message starts with the parameter key; the
    caller adds the file and place.
    """
    result: dict[str, dict[str, Any]] = {}
    for key, messages in occurrences.items():
        try:
            result[key] = normalize(PARAM_KEY_BY_NAME.get(key, key), merge_messages(messages))
        except CaffeportError as exc:
            raise ModelStructureError(f"{key}: {exc.message}") from None
    return result
