"""Tests of the Caffe message table and `normalize`.

The expected values come from Caffe's behaviour (what a layer means when a field
is left out, how proto2 treats repeated occurrences), and the field numbers are
checked against the independent notes in ``../shared/notes/caffe-format.md``,
so the tests catch a wrong table instead of restating it.
"""

from __future__ import annotations

import copy
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from caffeport.codec.caffe_schema import (
    ENUMS,
    LAYER_PARAMS,
    MESSAGES,
    PARAM_KEY_BY_NAME,
    PRESENCE_MEANINGFUL,
    V0_LAYER_TYPES,
    V1_LAYER_PARAMS,
    V1_LAYER_TYPES,
    V1_TYPE_NUMBERS,
    FieldSpec,
    enum_name,
    field_by_name,
    normalize,
)
from caffeport.errors import ModelStructureError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTES = PROJECT_ROOT.parent / "shared" / "notes" / "caffe-format.md"


def f32(value: float) -> float:
    """``value`` as the float32 a caffemodel stores, computed independently of the module."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


# --------------------------------------------------------------------------
# The behaviour the brief spells out


def test_convolution_with_square_fields_gets_caffe_defaults_and_no_hw_keys() -> None:
    conv = normalize("ConvolutionParameter", {"num_output": [20], "kernel_size": [5], "stride": [1]})
    assert conv["num_output"] == 20
    assert conv["kernel_size"] == [5]
    assert conv["stride"] == [1]
    assert conv["pad"] == []
    assert conv["dilation"] == []
    assert conv["bias_term"] is True
    assert conv["group"] == 1
    assert conv["axis"] == 1
    assert conv["force_nd_im2col"] is False
    assert conv["engine"] == "DEFAULT"
    for absent in ("pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"):
        assert absent not in conv, absent
    assert "weight_filler" not in conv and "bias_filler" not in conv


def test_convolution_without_num_output_keeps_it_absent() -> None:
    assert "num_output" not in normalize("ConvolutionParameter", {"kernel_size": [3]})


def test_scalar_last_value_wins() -> None:
    assert normalize("ConvolutionParameter", {"num_output": [10, 20]})["num_output"] == 20
    assert normalize("PoolingParameter", {"pool": ["MAX", "AVE"]})["pool"] == "AVE"
    assert normalize("BatchNormParameter", {"use_global_stats": [True, False]})["use_global_stats"] is False


def test_repeated_keeps_every_value_in_order() -> None:
    conv = normalize("ConvolutionParameter", {"kernel_size": [3, 5], "pad": [1, 2]})
    assert conv["kernel_size"] == [3, 5]
    assert conv["pad"] == [1, 2]


def test_enum_from_text_name_and_binary_number_agree() -> None:
    from_text = normalize("PoolingParameter", {"pool": ["AVE"], "kernel_size": [2]})
    from_binary = normalize("PoolingParameter", {"pool": [1], "kernel_size": [2]})
    assert from_text["pool"] == "AVE"
    assert from_binary == from_text


def test_unknown_enum_number_stays_an_int() -> None:
    assert normalize("PoolingParameter", {"pool": [7]})["pool"] == 7
    assert enum_name("PoolMethod", 7) == 7
    assert enum_name("PoolMethod", 2) == "STOCHASTIC"
    assert enum_name("NoSuchEnum", 1) == 1


def test_enum_text_name_that_is_not_a_value_raises_naming_everything() -> None:
    with pytest.raises(ModelStructureError) as info:
        normalize("PoolingParameter", {"pool": ["MAXIMUM"]})
    text = str(info.value)
    assert "PoolingParameter.pool" in text
    assert "MAXIMUM" in text
    for allowed in ("MAX", "AVE", "STOCHASTIC"):
        assert allowed in text


def test_float_fields_become_float() -> None:
    bn = normalize("BatchNormParameter", {"eps": [0]})
    assert bn["eps"] == 0.0 and type(bn["eps"]) is float
    lrn = normalize("LRNParameter", {"alpha": [1], "beta": [2]})
    assert type(lrn["alpha"]) is float and lrn["alpha"] == 1.0
    assert lrn["beta"] == 2.0


def test_float_fields_hold_the_float32_caffe_uses_so_text_equals_binary() -> None:
    from_text = normalize("ReLUParameter", {"negative_slope": [0.1]})
    from_binary = normalize("ReLUParameter", {"negative_slope": [f32(0.1)]})
    assert from_text == from_binary
    assert from_text["negative_slope"] == f32(0.1)
    # An explicit default and the same value written out agree as well.
    assert normalize("BatchNormParameter", {}) == normalize("BatchNormParameter", {"eps": [1e-5]})
    assert normalize("BatchNormParameter", {})["eps"] == pytest.approx(1e-5)


def test_float_text_words() -> None:
    assert normalize("ClipParameter", {"min": ["-inf"], "max": ["inf"]}) == {
        "min": float("-inf"),
        "max": float("inf"),
    }


def test_integer_field_rejects_a_fraction() -> None:
    with pytest.raises(
        ModelStructureError, match=r"field ConvolutionParameter\.num_output: expected an integer"
    ):
        normalize("ConvolutionParameter", {"num_output": [2.5]})
    with pytest.raises(
        ModelStructureError, match=r"field ConvolutionParameter\.kernel_size: expected an integer"
    ):
        normalize("ConvolutionParameter", {"kernel_size": [3, "five"]})


def test_integer_field_accepts_an_integral_float() -> None:
    value = normalize("ConvolutionParameter", {"num_output": [4.0]})["num_output"]
    assert value == 4 and type(value) is int


def test_negative_int32_as_sign_extended_varint() -> None:
    # A writer puts -1 in an int32 field as the 64-bit two's complement.
    assert normalize("FlattenParameter", {"end_axis": [2**64 - 1]})["end_axis"] == -1
    assert normalize("FlattenParameter", {"end_axis": [-1]})["end_axis"] == -1


def test_out_of_range_integers_raise() -> None:
    with pytest.raises(ModelStructureError, match=r"ConvolutionParameter\.group"):
        normalize("ConvolutionParameter", {"group": [-2]})
    with pytest.raises(ModelStructureError, match=r"CropParameter\.axis"):
        normalize("CropParameter", {"axis": [2**40]})


def test_bool_from_binary_ints_and_text_words() -> None:
    ip = normalize("InnerProductParameter", {"bias_term": [0], "transpose": [1]})
    assert ip["bias_term"] is False and ip["transpose"] is True
    assert normalize("InnerProductParameter", {"bias_term": ["false"]})["bias_term"] is False
    with pytest.raises(ModelStructureError, match=r"InnerProductParameter\.bias_term"):
        normalize("InnerProductParameter", {"bias_term": [0.5]})


def test_string_fields() -> None:
    python = normalize("PythonParameter", {"module": [b"my_layers"], "layer": ["Custom"]})
    assert python["module"] == "my_layers"
    assert python["layer"] == "Custom"
    assert python["param_str"] == ""
    with pytest.raises(ModelStructureError, match=r"PythonParameter\.module"):
        normalize("PythonParameter", {"module": [3]})


def test_numpy_scalars_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    got = normalize("ConvolutionParameter", {"num_output": [np.uint32(8)], "kernel_size": [np.int64(3)]})
    assert got == normalize("ConvolutionParameter", {"num_output": [8], "kernel_size": [3]})
    assert type(got["num_output"]) is int
    slope = normalize("ReLUParameter", {"negative_slope": [np.float32(0.1)]})
    assert slope == normalize("ReLUParameter", {"negative_slope": [0.1]})


# --------------------------------------------------------------------------
# Defaults: Caffe's explicit ones, and the fields that must stay absent

NUMERIC_DEFAULTS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # message, expected defaults, fields that must stay absent
    (
        "InnerProductParameter",
        {"bias_term": True, "axis": 1, "transpose": False},
        ("num_output", "weight_filler", "bias_filler"),
    ),
    ("BatchNormParameter", {"moving_average_fraction": f32(0.999), "eps": f32(1e-5)}, ("use_global_stats",)),
    ("ScaleParameter", {"axis": 1, "num_axes": 1, "bias_term": False}, ("filler", "bias_filler")),
    ("BiasParameter", {"axis": 1, "num_axes": 1}, ("filler",)),
    (
        "PoolingParameter",
        {"pool": "MAX", "pad": 0, "stride": 1, "global_pooling": False, "round_mode": "CEIL"},
        ("kernel_size", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w"),
    ),
    (
        "LRNParameter",
        {"local_size": 5, "alpha": 1.0, "beta": 0.75, "k": 1.0, "norm_region": "ACROSS_CHANNELS"},
        (),
    ),
    ("ConcatParameter", {"axis": 1}, ("concat_dim",)),
    ("SliceParameter", {"axis": 1, "slice_point": []}, ("slice_dim",)),
    ("SoftmaxParameter", {"axis": 1}, ()),
    ("FlattenParameter", {"axis": 1, "end_axis": -1}, ()),
    ("EltwiseParameter", {"operation": "SUM", "stable_prod_grad": True, "coeff": []}, ()),
    ("DropoutParameter", {"dropout_ratio": 0.5}, ()),
    ("PReLUParameter", {"channel_shared": False}, ("filler",)),
    ("ReshapeParameter", {"axis": 0, "num_axes": -1}, ("shape",)),
    ("CropParameter", {"axis": 2, "offset": []}, ()),
    ("EmbedParameter", {"bias_term": True}, ("num_output", "input_dim")),
    ("RecurrentParameter", {"expose_hidden": False, "debug_info": False}, ("num_output",)),
    ("PowerParameter", {"power": 1.0, "scale": 1.0, "shift": 0.0}, ()),
    ("ELUParameter", {"alpha": 1.0}, ()),
    ("ReLUParameter", {"negative_slope": 0.0, "engine": "DEFAULT"}, ()),
    ("SwishParameter", {"beta": 1.0}, ()),
    ("InputParameter", {"shape": []}, ()),
    ("ArgMaxParameter", {"out_max_val": False, "top_k": 1}, ("axis",)),
    (
        "NormalizeParameter",
        {"across_spatial": True, "channel_shared": True, "eps": f32(1e-10)},
        ("scale_filler",),
    ),
    ("PermuteParameter", {"order": []}, ()),
    (
        "PriorBoxParameter",
        {"min_size": [], "max_size": [], "aspect_ratio": [], "flip": True, "clip": False, "offset": 0.5},
        ("img_size", "img_h", "img_w", "step", "step_h", "step_w"),
    ),
    (
        "DetectionOutputParameter",
        {"share_location": True, "background_label_id": 0, "code_type": "CORNER", "keep_top_k": -1},
        ("confidence_threshold", "nms_param"),
    ),
]


@pytest.mark.parametrize(
    ("message", "expected", "absent"), NUMERIC_DEFAULTS, ids=[m for m, _, _ in NUMERIC_DEFAULTS]
)
def test_defaults_of_an_empty_message(
    message: str, expected: dict[str, Any], absent: tuple[str, ...]
) -> None:
    got = normalize(message, {})
    for name, value in expected.items():
        assert got[name] == value, name
        assert type(got[name]) is type(value), name
    for name in absent:
        assert name not in got, name


def test_presence_meaningful_field_keeps_a_given_value() -> None:
    assert normalize("BatchNormParameter", {"use_global_stats": [False]})["use_global_stats"] is False
    pool = normalize("PoolingParameter", {"kernel_h": [3], "kernel_w": [2], "pad_h": [0]})
    assert (pool["kernel_h"], pool["kernel_w"], pool["pad_h"]) == (3, 2, 0)
    assert "pad_w" not in pool


def test_v0_layer_keeps_only_what_was_given() -> None:
    v0 = normalize("V0LayerParameter", {"name": ["conv1"], "type": ["conv"], "num_output": [96]})
    assert "blobs" not in v0  # weights bypass the schema (see the module docstring)
    assert v0 == {
        "name": "conv1",
        "type": "conv",
        "num_output": 96,
        "blobs_lr": [],
        "weight_decay": [],
    }


# --------------------------------------------------------------------------
# Nested messages


def test_nested_filler_gets_its_own_defaults() -> None:
    conv = normalize("ConvolutionParameter", {"weight_filler": [{"type": ["xavier"]}]})
    filler = conv["weight_filler"]
    assert filler["type"] == "xavier"
    assert filler["std"] == 1.0 and filler["max"] == 1.0 and filler["value"] == 0.0
    assert filler["sparse"] == -1
    assert filler["variance_norm"] == "FAN_IN"
    assert normalize("ConvolutionParameter", {"bias_filler": [{}]})["bias_filler"]["type"] == "constant"


def test_nested_shape_and_repeated_messages() -> None:
    assert normalize("ReshapeParameter", {"shape": [{"dim": [0, -1]}]})["shape"] == {"dim": [0, -1]}
    shapes = normalize("InputParameter", {"shape": [{"dim": [1, 3, 224, 224]}, {"dim": [1, 1]}]})["shape"]
    assert shapes == [{"dim": [1, 3, 224, 224]}, {"dim": [1, 1]}]


def test_singular_message_given_twice_is_merged() -> None:
    conv = normalize(
        "ConvolutionParameter",
        {"weight_filler": [{"type": ["gaussian"], "std": [0.5]}, {"std": [0.01]}]},
    )
    assert conv["weight_filler"]["type"] == "gaussian"
    assert conv["weight_filler"]["std"] == f32(0.01)


def test_nested_errors_name_the_nested_message() -> None:
    with pytest.raises(ModelStructureError, match=r"FillerParameter\.variance_norm"):
        normalize("ConvolutionParameter", {"weight_filler": [{"variance_norm": ["FAN_SIDEWAYS"]}]})
    with pytest.raises(ModelStructureError, match=r"ConvolutionParameter\.weight_filler"):
        normalize("ConvolutionParameter", {"weight_filler": [5]})


def test_text_and_binary_spellings_of_one_layer_are_identical() -> None:
    text = {
        "num_output": [64],
        "bias_term": [False],
        "kernel_size": [3],
        "pad": [1],
        "engine": ["CUDNN"],
        "axis": [-1],
        "weight_filler": [{"type": ["msra"], "std": [0.02], "variance_norm": ["FAN_OUT"]}],
    }
    binary = {
        "weight_filler": [{"variance_norm": [1], "std": [f32(0.02)], "type": ["msra"]}],
        "axis": [2**64 - 1],
        "engine": [2],
        "pad": [1],
        "kernel_size": [3],
        "bias_term": [0],
        "num_output": [64],
    }
    a, b = normalize("ConvolutionParameter", text), normalize("ConvolutionParameter", binary)
    assert a == b
    assert list(a) == list(b)  # same key order too


# --------------------------------------------------------------------------
# Unknown fields and messages


def test_unknown_fields_are_kept_collapsed() -> None:
    got = normalize(
        "ConvolutionParameter",
        {
            "kernel_size": [3],
            "my_flag": [1],
            "my_list": [1, 2],
            "my_msg": [{"a": [1], "b": [1, 2], "c": [{"d": [5]}]}],
        },
    )
    assert got["kernel_size"] == [3]
    assert got["my_flag"] == 1
    assert got["my_list"] == [1, 2]
    assert got["my_msg"] == {"a": 1, "b": [1, 2], "c": {"d": 5}}


def test_unknown_message_is_collapsed_and_never_raises() -> None:
    raw = {"upsample": [2], "mode": ["NEAREST"], "sizes": [1, 2], "inner": [{"x": [0.5]}]}
    assert normalize("UpsampleParameter", raw) == {
        "upsample": 2,
        "mode": "NEAREST",
        "sizes": [1, 2],
        "inner": {"x": 0.5},
    }


def test_normalize_is_pure() -> None:
    raw = {"kernel_size": [3], "weight_filler": [{"type": ["xavier"]}], "custom": [{"a": [1]}]}
    before = copy.deepcopy(raw)
    first = normalize("ConvolutionParameter", raw)
    first["pad"].append(9)
    first["weight_filler"]["type"] = "changed"
    assert raw == before
    second = normalize("ConvolutionParameter", raw)
    assert second["pad"] == []
    assert second["weight_filler"]["type"] == "xavier"


# --------------------------------------------------------------------------
# The table's own consistency


def test_every_layer_param_names_a_known_message() -> None:
    for table in (LAYER_PARAMS, V1_LAYER_PARAMS):
        for number, (key, message) in table.items():
            assert message in MESSAGES, (number, key, message)
            assert key.endswith("_param"), key
    assert len({key for key, _ in LAYER_PARAMS.values()}) == len(LAYER_PARAMS)
    assert len({key for key, _ in V1_LAYER_PARAMS.values()}) == len(V1_LAYER_PARAMS)


def test_param_key_by_name_agrees_with_both_layer_tables() -> None:
    for table in (LAYER_PARAMS, V1_LAYER_PARAMS):
        for key, message in table.values():
            assert PARAM_KEY_BY_NAME[key] == message, key
    assert set(PARAM_KEY_BY_NAME) == {k for k, _ in LAYER_PARAMS.values()} | {
        k for k, _ in V1_LAYER_PARAMS.values()
    }


def test_v1_params_are_a_subset_of_v2_params() -> None:
    v2 = {key: message for key, message in LAYER_PARAMS.values()}
    for key, message in V1_LAYER_PARAMS.values():
        assert v2.get(key) == message, key


def test_specs_are_well_formed() -> None:
    for message, fields in MESSAGES.items():
        names = [spec.name for spec in fields.values()]
        assert len(names) == len(set(names)), message
        for number, spec in fields.items():
            where = f"{message}.{spec.name}"
            assert isinstance(spec, FieldSpec)
            assert spec.number == number, where
            assert 1 <= number < 2**29, where
            if spec.kind == "message":
                assert spec.type_name in MESSAGES, where
                assert spec.default is None, where
            elif spec.kind == "enum":
                assert spec.type_name in ENUMS, where
                if spec.default is not None:
                    assert spec.default in ENUMS[spec.type_name].values(), where
            else:
                assert spec.type_name is None, where
            if spec.repeated:
                assert spec.default is None, where
            if spec.default is not None and spec.kind in ("float", "double"):
                assert isinstance(spec.default, float), where
            if spec.default is not None and spec.kind == "bool":
                assert isinstance(spec.default, bool), where
            if spec.default is not None and spec.kind.endswith(("int32", "int64")):
                assert type(spec.default) is int, where
            assert field_by_name(message, spec.name) is spec
    for message, names in PRESENCE_MEANINGFUL.items():
        assert message in MESSAGES, message
        for name in names:
            assert field_by_name(message, name) is not None, (message, name)


def test_enums_have_distinct_names() -> None:
    for enum, values in ENUMS.items():
        assert values, enum
        assert len(set(values.values())) == len(values), enum


# --------------------------------------------------------------------------
# caffe.proto itself: excerpts of BVLC master's and the SSD fork's, in tests/readers/data (their headers
# cite the commits), parsed here so the schema is checked against Caffe's own text, not against itself.

DATA = Path(__file__).resolve().parent / "data"
BVLC_PROTO = DATA / "bvlc_caffe.proto.txt"
SSD_PROTO = DATA / "ssd_caffe.proto.txt"
_SCALARS = frozenset(
    {"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "float", "double", "string", "bytes"}
)


@dataclass(frozen=True)
class ProtoField:
    """One field as caffe.proto declares it; ``enum`` is the resolved enum's (number, name) values, in order."""

    name: str
    number: int
    label: str
    type: str
    default: str | None
    enum: tuple[tuple[int, str], ...] | None


_PROTO_FIELD = re.compile(r"(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*(?:\[([^\]]*)\])?\s*;")
_PROTO_OPEN = re.compile(r"(message|enum)\s+(\w+)\s*\{")
_PROTO_VALUE = re.compile(r"(\w+)\s*=\s*(-?\d+)\s*;")


def _parse_proto(text: str) -> dict[str, dict[str, ProtoField]]:
    """message name -> field name -> `ProtoField`, for the proto2 subset caffe.proto uses.

    Fails on any line it does not understand, so a field can never be skipped silently. Enum types resolve
    the way protoc scopes them: the innermost enclosing message first, then outwards.
    """
    scopes: list[tuple[str, str]] = []
    enums: dict[tuple[str, ...], list[tuple[int, str]]] = {}
    declared: list[tuple[tuple[str, ...], re.Match[str]]] = []
    for line in text.splitlines():
        line = line.split("//", 1)[0].strip()
        if not line:
            continue
        if opened := _PROTO_OPEN.fullmatch(line):
            scopes.append((opened[1], opened[2]))
            if opened[1] == "enum":
                enums[tuple(name for _, name in scopes)] = []
        elif line == "}":
            scopes.pop()
        elif scopes and scopes[-1][0] == "enum" and (value := _PROTO_VALUE.fullmatch(line)):
            enums[tuple(name for _, name in scopes)].append((int(value[2]), value[1]))
        elif (field := _PROTO_FIELD.fullmatch(line)) and scopes and scopes[-1][0] == "message":
            declared.append((tuple(name for _, name in scopes), field))
        else:
            raise AssertionError(f"a caffe.proto line this parser does not read: {line!r}")
    assert not scopes, "unbalanced braces in the caffe.proto excerpt"
    messages: dict[str, dict[str, ProtoField]] = {}
    for path, field in declared:
        options = dict(tuple(part.strip() for part in o.split("=", 1)) for o in (field[5] or "").split(",") if o)
        enum = None
        for depth in range(len(path), -1, -1):
            values = enums.get((*path[:depth], *field[2].split(".")))
            if values is not None:
                enum = tuple(values)
                break
        messages.setdefault(path[-1], {})[field[3]] = ProtoField(
            field[3], int(field[4]), field[1], field[2], options.get("default"), enum
        )
    return messages


def _parse_proto_file(path: Path) -> dict[str, dict[str, ProtoField]]:
    if not path.is_file():
        pytest.fail(f"{path} is missing: the caffe.proto cross-checks need it")
    return _parse_proto(path.read_text(encoding="utf-8"))


def _proto_messages() -> dict[str, dict[str, ProtoField]]:
    """Both protos' messages, a message both declare with the union of its fields (they must agree)."""
    bvlc, ssd = _parse_proto_file(BVLC_PROTO), _parse_proto_file(SSD_PROTO)
    merged: dict[str, dict[str, ProtoField]] = {}
    for message in bvlc.keys() | ssd.keys():
        ours, theirs = bvlc.get(message, {}), ssd.get(message, {})
        for name in ours.keys() & theirs.keys():
            a, b = ours[name], theirs[name]
            assert (a.number, a.label, a.type) == (b.number, b.label, b.type), f"{message}.{name}: BVLC and SSD differ"
        merged[message] = {**theirs, **ours}
    return merged


def test_schema_agrees_with_caffe_proto() -> None:
    """Every message and field of MESSAGES as caffe.proto declares it: number, label, type, enum values, default."""
    proto = _proto_messages()
    for message, fields in MESSAGES.items():
        assert message in proto, f"{message} is in neither caffe.proto"
        declared = {name: f for name, f in proto[message].items() if (message, name) not in DELIBERATELY_OMITTED}
        ours = {spec.name: spec for spec in fields.values()}
        assert sorted(ours) == sorted(declared), f"{message}: fields differ from caffe.proto"
        for name, field in declared.items():
            spec, where = ours[name], f"{message}.{name}"
            assert spec.number == field.number, where
            assert spec.repeated == (field.label == "repeated"), where
            if field.enum is not None:
                assert spec.kind == "enum" and ENUMS[spec.type_name or ""] == dict(field.enum), where
                assert spec.default == field.default, where
            elif field.type in _SCALARS:
                assert spec.kind == field.type, where
                if field.default is None:
                    assert spec.default is None, where
                elif field.type in ("float", "double"):
                    assert spec.default == float(field.default), where  # as written; normalize rounds it
                else:
                    assert spec.default == _proto_default(field), where
            else:
                assert (spec.kind, spec.type_name) == ("message", field.type), where


def test_v1_layer_tables_agree_with_caffe_proto() -> None:
    """V1LayerParameter's ``*_param`` numbers and its LayerType enum, from BVLC's caffe.proto."""
    v1 = _parse_proto_file(BVLC_PROTO)["V1LayerParameter"]
    params = {f.number: (name, f.type) for name, f in v1.items() if name.endswith("_param")}
    assert params == V1_LAYER_PARAMS
    assert v1["type"].enum is not None and dict(v1["type"].enum) == {n: k for k, n in V1_TYPE_NUMBERS.items()}


def _proto_default(field: ProtoField) -> Any:
    """What proto2 gives an absent singular scalar ``field``: its declared default, else the implicit one."""
    text = field.default
    if field.enum is not None:
        return text if text is not None else field.enum[0][1]  # proto2: the first value declared
    if field.type == "bool":
        return text == "true"
    if field.type in ("string", "bytes"):
        value = text[1:-1] if text is not None else ""  # '...' or "..."; no escapes in caffe.proto
        return value.encode() if field.type == "bytes" else value
    if field.type in ("float", "double"):
        value = float(text) if text is not None else 0.0
        return f32(value) if field.type == "float" else value  # Caffe computes with the float32
    return int(text) if text is not None else 0


def _expected_from_empty(message: str) -> dict[str, Any]:
    """``normalize(message, {})`` stated from caffe.proto alone: field-number order, Caffe's defaults."""
    fields = sorted(_proto_messages()[message].values(), key=lambda f: f.number)
    expected: dict[str, Any] = {}
    for field in fields:
        if (message, field.name) in DELIBERATELY_OMITTED:
            continue
        if field.label == "repeated":
            expected[field.name] = []
        elif field.enum is None and field.type not in _SCALARS:
            continue  # a nested message stays absent until given
        elif field.name in PRESENCE_MEANINGFUL.get(message, ()):
            continue  # pinned one by one in test_defaults_of_an_empty_message and its neighbours
        else:
            expected[field.name] = _proto_default(field)
    return expected


@pytest.mark.parametrize("message", sorted(MESSAGES))
def test_every_message_normalizes_from_empty_to_caffes_defaults(message: str) -> None:
    """Every field of the message as caffe.proto declares it, with the default Caffe gives it, in number order."""
    got = normalize(message, {})
    expected = _expected_from_empty(message)
    assert list(got) == list(expected), f"{message}: fields {list(got)}, caffe.proto gives {list(expected)}"
    for name, value in expected.items():
        assert got[name] == value and type(got[name]) is type(value), (
            f"{message}.{name}: {got[name]!r}, caffe.proto gives {value!r}"
        )


def test_caffe_proto_defaults_are_really_compared() -> None:
    """The proto excerpts are parsed as intended: a few defaults read from them, checked by hand."""
    conv, pool = _expected_from_empty("ConvolutionParameter"), _expected_from_empty("PoolingParameter")
    assert (conv["bias_term"], conv["group"], conv["axis"], conv["engine"]) == (True, 1, 1, "DEFAULT")
    assert (pool["pool"], pool["stride"], pool["round_mode"]) == ("MAX", 1, "CEIL")
    assert _expected_from_empty("BatchNormParameter") == {"moving_average_fraction": f32(0.999), "eps": f32(1e-5)}
    lrn = _expected_from_empty("LRNParameter")
    assert (lrn["local_size"], lrn["alpha"], lrn["beta"], lrn["norm_region"]) == (5, 1.0, 0.75, "ACROSS_CHANNELS")
    assert _expected_from_empty("InnerProductParameter") == {"bias_term": True, "axis": 1, "transpose": False}
    assert _expected_from_empty("FillerParameter")["type"] == "constant"
    multibox = _expected_from_empty("MultiBoxLossParameter")  # from the SSD fork's proto
    assert (multibox["loc_loss_type"], multibox["code_type"], multibox["neg_pos_ratio"]) == ("SMOOTH_L1", "CORNER", 3.0)


def test_field_by_name_lookups() -> None:
    spec = field_by_name("ConvolutionParameter", "kernel_size")
    assert spec is not None and spec.repeated and spec.number == 4
    assert field_by_name("ConvolutionParameter", "nope") is None
    assert field_by_name("NoSuchParameter", "kernel_size") is None


def test_ssd_numbers_do_not_collide_with_bvlc() -> None:
    """The SSD fork's own LayerParameter fields use numbers BVLC master gives to no field, so one table serves both.

    Checked against both caffe.proto texts: each field the fork adds has a number no BVLC LayerParameter field
    (swish_param and clip_param, added after the fork, included) has; the fields both declare keep their
    numbers; and LAYER_PARAMS gives every ``*_param`` of either proto its number and message.
    """
    bvlc, ssd = _parse_proto_file(BVLC_PROTO)["LayerParameter"], _parse_proto_file(SSD_PROTO)["LayerParameter"]
    bvlc_numbers = {field.number: name for name, field in bvlc.items()}
    added = {name: field for name, field in ssd.items() if name not in bvlc}
    assert len(added) >= 8, f"the SSD excerpt's LayerParameter adds only {sorted(added)}"
    for name, field in added.items():
        assert field.number not in bvlc_numbers, (
            f"SSD's {name} = {field.number} collides with BVLC's {bvlc_numbers.get(field.number)}"
        )
    for name in set(ssd) & set(bvlc):
        assert ssd[name].number == bvlc[name].number, f"{name}: SSD {ssd[name].number}, BVLC {bvlc[name].number}"
    declared = {field.number: (name, field.type) for name, field in {**added, **bvlc}.items()
                if name.endswith("_param")}
    assert declared == LAYER_PARAMS


def test_v1_layer_types_cover_the_whole_enum() -> None:
    assert sorted(V1_LAYER_TYPES) == list(range(40))
    assert V1_LAYER_TYPES[4] == "Convolution"
    assert V1_LAYER_TYPES[14] == "InnerProduct"
    assert V1_LAYER_TYPES[39] == "Deconvolution"
    assert V1_LAYER_TYPES[21] == "SoftmaxWithLoss"
    assert V1_LAYER_TYPES[0] == ""


def test_v1_type_numbers_name_the_same_enum() -> None:
    assert sorted(V1_TYPE_NUMBERS.values()) == list(range(40))
    renamed = {"NONE": "", "SOFTMAX_LOSS": "softmaxwithloss"}  # the two UpgradeV1LayerType renames
    for enum_value_name, number in V1_TYPE_NUMBERS.items():
        expected = renamed.get(enum_value_name, enum_value_name.replace("_", "").lower())
        assert V1_LAYER_TYPES[number].lower() == expected, enum_value_name


def test_v0_layer_types() -> None:
    expected = {
        "conv": "Convolution",
        "innerproduct": "InnerProduct",
        "pool": "Pooling",
        "relu": "ReLU",
        "lrn": "LRN",
        "dropout": "Dropout",
        "softmax": "Softmax",
        "concat": "Concat",
        "data": "Data",
        "images": "ImageData",
    }
    for v0, v2 in expected.items():
        assert V0_LAYER_TYPES[v0] == v2
    assert "padding" in V0_LAYER_TYPES
    v1_types = set(V1_LAYER_TYPES.values())
    for v0, v2 in V0_LAYER_TYPES.items():
        if v0 != "padding":  # folded into the next layer by Caffe, never a layer of its own
            assert v2 in v1_types, v0


# --------------------------------------------------------------------------
# Cross-check against ../shared/notes/caffe-format.md

_ASSIGNMENT = re.compile(
    r"(?P<name>[A-Za-z_]\w*)(?:\s*\([^)]*\))?\s*=\s*\**(?P<number>\d+)\**(?:\s*\(default\s+\**(?P<default>[^)*]+)\**\))?"
)


def _notes_rows() -> dict[str, str]:
    if not NOTES.is_file():
        pytest.fail(
            f"{NOTES} is missing: the field-number cross-check needs ../shared/notes/caffe-format.md "
            "next to the project root (see ../shared/README.md)"
        )
    rows: dict[str, str] = {}
    for line in NOTES.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.lstrip().startswith("|") and len(cells) == 2:
            rows[cells[0]] = cells[1]
    return rows


def _assignments(cell: str) -> list[tuple[str, int, str | None]]:
    return [(m["name"], int(m["number"]), m["default"]) for m in _ASSIGNMENT.finditer(cell)]


def _row(rows: dict[str, str], label: str) -> str:
    for key, cell in rows.items():
        if key == label or key.startswith(label + " "):
            return cell
    pytest.fail(f"{NOTES} has no table row for {label!r}")


def _parse_default(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    return float(text)


NOTED_MESSAGES = [
    "ConvolutionParameter",
    "InnerProductParameter",
    "BatchNormParameter",
    "ScaleParameter",
    "PReLUParameter",
    "RecurrentParameter",
    "EmbedParameter",
    "BlobShape",
    "BlobProto",
    "V0LayerParameter",
]


# Fields the schema leaves out on purpose, with the number the notes must give them.
DELIBERATELY_OMITTED = {("V0LayerParameter", "blobs"): 50}


@pytest.mark.parametrize("message", NOTED_MESSAGES)
def test_field_numbers_agree_with_the_notes(message: str) -> None:
    found = _assignments(_row(_notes_rows(), message))
    assert found, f"no field numbers parsed from the notes row {message!r}"
    for name, number, default in found:
        if (message, name) in DELIBERATELY_OMITTED:
            assert number == DELIBERATELY_OMITTED[message, name]
            assert field_by_name(message, name) is None
            assert number not in MESSAGES[message]
            continue
        spec = field_by_name(message, name)
        assert spec is not None, f"{message}.{name} is in the notes but not in MESSAGES"
        assert spec.number == number, f"{message}.{name}: notes say {number}, schema says {spec.number}"
        if default is not None:
            assert spec.default == _parse_default(default), f"{message}.{name} default"


def test_layer_param_numbers_agree_with_the_notes() -> None:
    found = _assignments(_row(_notes_rows(), "LayerParameter `*_param`"))
    assert len(found) >= 10
    for name, number, _ in found:
        assert number in LAYER_PARAMS, f"{name}_param={number} from the notes is not in LAYER_PARAMS"
        assert LAYER_PARAMS[number][0] == f"{name}_param", number


def test_v1_param_numbers_agree_with_the_notes() -> None:
    found = [
        (n, num)
        for n, num, _ in _assignments(_row(_notes_rows(), "V1LayerParameter"))
        if n.endswith("_param")
    ]
    assert found
    for name, number in found:
        assert V1_LAYER_PARAMS[number][0] == name, number


def test_v1_type_enum_agrees_with_the_notes() -> None:
    found = _assignments(_row(_notes_rows(), "V1 type enum"))
    assert len(found) >= 10
    for enum_value_name, number, _ in found:
        expected = "" if enum_value_name == "NONE" else enum_value_name.replace("_", "").lower()
        assert V1_LAYER_TYPES[number].lower() == expected, (enum_value_name, number)
        assert V1_TYPE_NUMBERS[enum_value_name] == number
