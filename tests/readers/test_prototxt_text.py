"""Tests of the schema-less protobuf text-format parser (`caffeport.readers.prototxt_text`).

Small literal texts pin down each feature and each error (class, line and column), the real
Caffe prototxts under ``/work/shared/caffe-models`` check that the parser reads what Caffe
users actually write, and hypothesis checks that parsing inverts a small serialiser and that no
input makes the parser raise anything but `PrototxtSyntaxError`.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caffeport.errors import InputFileError, PrototxtSyntaxError
from caffeport.readers import prototxt_text
from caffeport.readers.prototxt_text import parse_text, parse_text_file
from tests.hostile.hostile_helpers import hang_guard

MODELS = Path(__file__).resolve().parents[2] / ".." / "shared" / "caffe-models"


# -- features --------------------------------------------------------------------------------


def test_example_from_the_spec() -> None:
    assert parse_text('layer { name: "a" bottom: "x" bottom: "y" }') == {
        "layer": [{"name": ["a"], "bottom": ["x", "y"]}]
    }


def test_every_field_is_a_list_in_order_of_appearance() -> None:
    text = 'a: 1 b: "x" a: 2 c { } b: "y" a: 3'
    result = parse_text(text)
    assert result == {"a": [1, 2, 3], "b": ["x", "y"], "c": [{}]}
    assert list(result) == ["a", "b", "c"]


def test_empty_and_comment_only_inputs_give_an_empty_dict() -> None:
    assert parse_text("") == {}
    assert parse_text("  \n\t\n") == {}
    assert parse_text("# nothing here\n# at all") == {}


@pytest.mark.parametrize(
    "text",
    [
        "m { a: 1 }",
        "m: { a: 1 }",
        "m < a: 1 >",
        "m: < a: 1 >",
        "m{a:1}",
        "m\n{\n  a: 1\n}\n",
    ],
)
def test_nested_message_forms_are_equivalent(text: str) -> None:
    assert parse_text(text) == {"m": [{"a": [1]}]}


def test_deeply_nested_and_repeated_messages() -> None:
    text = "net { layer { p { q { r: 1 } } } layer { p { } } }"
    assert parse_text(text) == {"net": [{"layer": [{"p": [{"q": [{"r": [1]}]}]}, {"p": [{}]}]}]}


# strings


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('"abc"', "abc"),
        ("'abc'", "abc"),
        ('""', ""),
        ('"it\'s"', "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ('"# not a comment"', "# not a comment"),
        ('"a" "b"', "ab"),
        ('"a" \'b\' "c"', "abc"),
        ('"a"\n  # comment between\n  "b"', "ab"),
        ('"\\n"', "\n"),
        ('"\\t"', "\t"),
        ('"\\r"', "\r"),
        ('"\\\\"', "\\"),
        ('"\\\'"', "'"),
        ('"\\""', '"'),
        ('"\\a"', "\a"),
        ('"\\b"', "\b"),
        ('"\\f"', "\f"),
        ('"\\v"', "\v"),
        ('"\\?"', "?"),
        ('"\\101"', "A"),
        ('"\\0"', "\0"),
        ('"\\12"', "\n"),
        ('"\\1012"', "A2"),
        ('"\\x41"', "A"),
        ('"\\x4"', "\x04"),
        ('"\\x414"', "A4"),
        ('"\\u00e9"', "\u00e9"),
        ('"\\U0001F600"', "\U0001f600"),
        ('"\\uD83D\\uDE00"', "\U0001f600"),
        # protoc writes non-ASCII text as octal-escaped UTF-8 bytes
        ('"caf\\303\\251"', "caf\u00e9"),
        # concatenation joins bytes, so one character may be split over two literals
        ('"\\303" "\\251"', "\u00e9"),
        ("\"\\xc3\" '\\xa9'", "\u00e9"),
        ('"caf\u00e9 \u4e2d"', "caf\u00e9 \u4e2d"),
    ],
)
def test_string_values(literal: str, value: str) -> None:
    assert parse_text(f"s: {literal}") == {"s": [value]}


# numbers


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("0", 0),
        ("7", 7),
        ("1234567890123456789012345", 1234567890123456789012345),
        ("-3", -3),
        ("+3", 3),
        ("- 3", -3),
        ("-\n  # a comment may sit between the sign and the number\n  3", -3),
        ("0x1F", 31),
        ("0XaB", 171),
        ("-0x10", -16),
        ("010", 8),
        ("00", 0),
        ("-017", -15),
    ],
)
def test_integer_values(literal: str, value: int) -> None:
    result = parse_text(f"i: {literal}")["i"]
    assert result == [value]
    assert type(result[0]) is int


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("1.5", 1.5),
        (".5", 0.5),
        ("-.5", -0.5),
        ("0.25", 0.25),
        ("5.", 5.0),
        ("1e-5", 1e-5),
        ("1E5", 1e5),
        ("1.0E+3", 1000.0),
        ("2.5e-3", 2.5e-3),
        ("0e0", 0.0),
        ("1.5f", 1.5),
        ("2F", 2.0),
        ("1e3f", 1000.0),
        ("5.f", 5.0),
        ("-1.5", -1.5),
        ("0.20000000298", 0.20000000298),
        ("1e999", math.inf),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("- inf", -math.inf),
        ("infinity", math.inf),
        ("-Infinity", -math.inf),
        ("INF", math.inf),
        ("+inf", math.inf),
    ],
)
def test_float_values(literal: str, value: float) -> None:
    result = parse_text(f"x: {literal}")["x"]
    assert result == [value]
    assert type(result[0]) is float


@pytest.mark.parametrize("literal", ["nan", "NaN", "NAN", "-nan"])
def test_nan_values(literal: str) -> None:
    (value,) = parse_text(f"x: {literal}")["x"]
    assert type(value) is float
    assert math.isnan(value)


# identifiers


@pytest.mark.parametrize(("literal", "value"), [("true", True), ("True", True), ("false", False), ("False", False)])
def test_bool_values(literal: str, value: bool) -> None:
    result = parse_text(f"b: {literal}")["b"]
    assert result == [value]
    assert type(result[0]) is bool


@pytest.mark.parametrize("literal", ["t", "f", "TRUE", "FALSE", "MAX", "TEST", "CONVOLUTION", "_x9", "infx"])
def test_other_identifiers_are_strings(literal: str) -> None:
    assert parse_text(f"e: {literal}") == {"e": [literal]}


# short repeated form


def test_short_repeated_scalars() -> None:
    assert parse_text("dim: [1, 3, 224, 224]") == {"dim": [1, 3, 224, 224]}


def test_short_repeated_form_extends_the_list() -> None:
    assert parse_text("dim: 1 dim: [2, 3] dim: 4 dim: []") == {"dim": [1, 2, 3, 4]}


def test_short_repeated_mixed_scalar_kinds() -> None:
    assert parse_text("v: [1, -2.5, \"s\" 't', MAX, true, -inf, 0x10]") == {
        "v": [1, -2.5, "st", "MAX", True, -math.inf, 16]
    }


@pytest.mark.parametrize("text", ["e: []", "e: [ ]", "e []", "e: [\n# nothing\n]"])
def test_empty_list_registers_the_key(text: str) -> None:
    assert parse_text(text) == {"e": []}


@pytest.mark.parametrize(
    "text",
    [
        "m: [{a: 1}, {a: 2}]",
        "m [{a: 1}, {a: 2}]",
        "m: [<a: 1>, {a: 2}]",
        "m [ < a: 1 > , < a: 2 > ]",
        "m: [{a: 1}] m {a: 2}",
    ],
)
def test_short_repeated_messages(text: str) -> None:
    assert parse_text(text) == {"m": [{"a": [1]}, {"a": [2]}]}


def test_messages_nested_inside_short_lists() -> None:
    text = "m: [{ n: [{ x: [1, 2] }, { y { z: 3 } }] }, {}]"
    assert parse_text(text) == {"m": [{"n": [{"x": [1, 2]}, {"y": [{"z": [3]}]}]}, {}]}


# comments, separators, whitespace


def test_comments_run_to_end_of_line() -> None:
    text = '# header\na: 1 # trailing\n#b: 2\n  # indented\nc: "x#y"#glued\nd { # open\n e: 2 } # end'
    assert parse_text(text) == {"a": [1], "c": ["x#y"], "d": [{"e": [2]}]}


def test_comment_at_end_of_input_without_newline() -> None:
    assert parse_text("a: 1 # no newline") == {"a": [1]}


@pytest.mark.parametrize(
    "text",
    [
        "a: 1, b: 2; c { d: 3 }, e: [4];",
        "a: 1; b: 2, c { d: 3; }; e: [4],",
        "a:1,b:2,c{d:3},e:[4]",
        "a: 1 b: 2 c { d: 3 } e: [4]",
    ],
)
def test_optional_separators(text: str) -> None:
    assert parse_text(text) == {"a": [1], "b": [2], "c": [{"d": [3]}], "e": [4]}


def test_whitespace_is_free() -> None:
    text = 'layer{name:"a"top:"b"}\r\n\tlayer\t{\r\n\t\tname\t:\t"c"\r\n}\f\v'
    assert parse_text(text) == {"layer": [{"name": ["a"], "top": ["b"]}, {"name": ["c"]}]}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[foo.bar]: 1", "[foo.bar]"),
        ("[ foo . bar ]: 1", "[foo.bar]"),
        ("[ext]: 1", "[ext]"),
        ("[type.googleapis.com/caffe.NetParameter]: 1", "[type.googleapis.com/caffe.NetParameter]"),
    ],
)
def test_extension_names(text: str, key: str) -> None:
    assert parse_text(text) == {key: [1]}


def test_extension_name_with_message_value() -> None:
    assert parse_text("m { [a.b] { c: 1 } }") == {"m": [{"[a.b]": [{"c": [1]}]}]}


def test_field_names_that_look_like_values() -> None:
    assert parse_text("true: false inf: nan_x MAX: 1") == {"true": [False], "inf": ["nan_x"], "MAX": [1]}


def test_bom_is_ignored() -> None:
    assert parse_text("\ufeffname: 'x'") == {"name": ["x"]}


def test_nesting_up_to_100_levels_is_accepted() -> None:
    text = "a { " * 100 + "}" * 100
    result: Any = parse_text(text)
    for _ in range(100):
        (result,) = result["a"]
    assert result == {}


def test_a_large_prototxt_parses() -> None:
    """20k lines parse completely (speed is measured in benchmarks/, not asserted here; this only guards a hang)."""
    layer = (
        'layer {\n  name: "conv"\n  type: "Convolution"\n  bottom: "x"\n  top: "y"\n'
        "  param { lr_mult: 1 decay_mult: 1 }\n  convolution_param {\n    num_output: 64\n"
        '    kernel_size: 3 # comment\n    weight_filler { type: "xavier" std: 0.01 }\n  }\n}\n'
    )
    text = layer * 2000
    assert text.count("\n") >= 20_000
    with hang_guard():
        result = parse_text(text)
    assert len(result["layer"]) == 2000


# -- errors ----------------------------------------------------------------------------------


ERROR_CASES: list[tuple[str, int, int, str]] = [
    # (text, line, column, a fragment of the message)
    ('layer "x"', 1, 7, "expected ':' or '{' after field name 'layer', found '\"x\"'"),
    ("a", 1, 2, "expected ':' or '{' after field name 'a', found end of input"),
    ("a 5", 1, 3, "expected ':' or '{' after field name 'a', found '5'"),
    ("a: }", 1, 4, "expected a value after 'a:', found '}'"),
    ("a:", 1, 3, "expected a value after 'a:', found end of input"),
    ("a: .", 1, 4, "expected a value after 'a:', found '.'"),
    ("a: 1\n}", 2, 1, "no open message"),
    ("a: 1\n\n  >", 3, 3, "no open message"),
    ("layer {\n  name: 'x'\n", 1, 7, "'{' opening the message for field 'layer' is never closed"),
    ("a { b { c: 1 }", 1, 3, "never closed: expected '}', found end of input"),
    ("a < b: 1", 1, 3, "expected '>', found end of input"),
    ("a: {", 1, 4, "never closed"),
    ("a { b: 1 >", 1, 10, "expected '}' to close the message for field 'a' opened at line 1, column 3"),
    ("a < b: 1 }", 1, 10, "expected '>' to close"),
    ("m {\n  5\n}", 2, 3, "expected a field name or '}', found '5'"),
    (", a: 1", 1, 1, "expected a field name, found ','"),
    ('"a": 1', 1, 1, "expected a field name, found '\"a\"'"),
    ("5: 1", 1, 1, "expected a field name, found '5'"),
    ("{ a: 1 }", 1, 1, "expected a field name, found '{'"),
    ("a: 1,, b: 2", 1, 6, "expected a field name, found ','"),
    ("a: 1;;", 1, 6, "expected a field name, found ';'"),
    # strings
    ('a: "abc\nb: 1', 1, 4, 'unterminated string: expected a closing "'),
    ("a: 'abc", 1, 4, "unterminated string: expected a closing '"),
    ('a: "ab\\\ncd"', 1, 4, "unterminated string"),
    ('a: "x" "y', 1, 8, "unterminated string"),
    ('a: "\\q"', 1, 5, "invalid escape sequence '\\q'"),
    ('a: "\\x"', 1, 5, "invalid escape sequence '\\x'"),
    ('a: "ok\\u12"', 1, 7, "invalid escape sequence '\\u'"),
    ('a: "\\777"', 1, 5, "octal escape '\\777' is above \\377"),
    ('a: "\\uD800"', 1, 5, "surrogate must be paired"),
    ('a: "\\uDE00"', 1, 5, "surrogate must be paired"),
    ('a: "\\U00110000"', 1, 5, "code points end at 10FFFF"),
    ('a: "\\xff"', 1, 4, "string is not valid UTF-8 (bad byte 0xff at byte 0 of its value)"),
    ('a: "ok" "\\303"', 1, 4, "not valid UTF-8"),
    # numbers
    ("a: 08", 1, 4, "found '08' (a number with a leading 0 is octal"),
    ("a: 00.5", 1, 4, "found '00.5'"),
    ("a: 1.5.3", 1, 4, "expected a number (decimal, 0x-hex or 0-octal integer, or float), found '1.5.3'"),
    ("a: 10abc", 1, 4, "found '10abc'"),
    ("a: 1e", 1, 4, "found '1e'"),
    ("a: 1e+", 1, 4, "found '1e'"),
    ("a: 0x", 1, 4, "found '0x'"),
    ("a: 0xg", 1, 4, "found '0xg'"),
    ("a: 1.5ff", 1, 4, "found '1.5ff'"),
    ("a: " + "9" * 5000, 1, 4, "integer literal of 5000 digits is too long"),
    ("a: -b", 1, 5, "expected a number after '-', found 'b'"),
    ("a: - true", 1, 6, "expected a number after '-', found 'true'"),
    ("a: -", 1, 5, "expected a number after '-', found end of input"),
    ("a: --1", 1, 5, "expected a number after '-', found '-'"),
    ('a: +"x"', 1, 5, "expected a number after '+'"),
    # stray characters
    ("a: @", 1, 4, "unexpected character '@' (U+0040)"),
    ("a: 1\n  b: 2 $", 2, 8, "unexpected character '$'"),
    ("a: 1 # c\n\u00a0b: 2", 2, 1, "unexpected character '\\xa0' (U+00A0)"),
    ("a = 1", 1, 3, "unexpected character '='"),
    ("a: 1 / 2", 1, 6, "expected a field name, found '/'"),
    # lists
    ("a: [1, 2", 1, 4, "'[' opening the list for field 'a' is never closed"),
    ("a: [1,", 1, 4, "never closed"),
    ("a: [", 1, 4, "never closed"),
    ("a: [{b: 2},", 1, 4, "never closed"),
    ("a: [{b: 2}", 1, 4, "never closed"),
    ("a: [1 2]", 1, 7, "expected ',' or ']' in the list for field 'a', found '2'"),
    ("a: [1,]", 1, 7, "expected a value in the list for field 'a', found ']'"),
    ("a: [,1]", 1, 5, "expected a value in the list for field 'a', found ','"),
    ("a [1]", 1, 4, "a list of plain values needs ':' after the field name"),
    ("a: [1, {b: 2}]", 1, 8, "it holds values, not messages"),
    ("a: [{b: 2}, 1]", 1, 13, "expected '{' or '<' to start a message in the list for field 'a', found '1'"),
    ("a: [{b: 2} {c: 1}]", 1, 12, "expected ',' or ']' in the list for field 'a', found '{'"),
    ("a: [{b: 2},]", 1, 12, "found ']'"),
    ("a: [[1]]", 1, 5, "found '['"),
    # extension names
    ("[a.]: 1", 1, 4, "expected an identifier in the bracketed extension name, found ']'"),
    ("[a b]: 1", 1, 4, "expected '.', '/' or ']' in the bracketed extension name, found 'b'"),
    ("[]: 1", 1, 2, "expected an identifier in the bracketed extension name"),
    ("[a", 1, 3, "found end of input"),
    # positions: BOM, CRLF and tabs
    ("\ufeffa: }", 1, 4, "expected a value"),
    ("a: 1\r\nb: }", 2, 4, "expected a value"),
    ("a {\n\tb: }", 2, 5, "expected a value"),
    # binary input
    ("a: 1\nb\0c", 2, 2, "this looks like a binary file (a .caffemodel?), not a prototxt"),
    # nesting depth
    ("a { " * 101 + "}" * 101, 1, 403, "nested more than 100 deep"),
    ("a { " * 100_000, 1, 403, "nested more than 100 deep"),
    ("a: [" + "{ b: [" * 101, 1, 5 + 6 * 100, "nested more than 100 deep"),
    # the first problem in the file is the one reported, lexical or not
    ('a: }\nb: "unterminated', 1, 4, "expected a value"),
    ("a: 1 @ b: }", 1, 6, "unexpected character '@'"),
]


@pytest.mark.parametrize(("text", "line", "column", "fragment"), ERROR_CASES)
def test_syntax_errors(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_text(text, path="net.prototxt")
    error = info.value
    assert type(error) is PrototxtSyntaxError
    assert fragment in error.message
    assert (error.line, error.column) == (line, column), error.message
    assert error.path == "net.prototxt"
    assert str(error).startswith(f"net.prototxt: line {line}, column {column}: ")


def test_error_without_path_has_no_path() -> None:
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_text("a: }")
    assert info.value.path is None
    assert str(info.value) == "line 1, column 4: expected a value after 'a:', found '}'"


def test_long_tokens_are_shortened_in_messages() -> None:
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_text("a " + '"' + "x" * 100 + '"')
    assert "found '\"" + "x" * 36 + "...'" in info.value.message


# -- files -----------------------------------------------------------------------------------


def test_parse_text_file_reads_utf8(tmp_path: Path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_bytes('\ufeffname: "r\u00e9seau"\nlayer { name: "a" }\n'.encode())
    assert parse_text_file(path) == {"name": ["r\u00e9seau"], "layer": [{"name": ["a"]}]}
    assert parse_text_file(str(path)) == parse_text_file(path)


def test_parse_text_file_empty_file_is_an_empty_message(tmp_path: Path) -> None:
    path = tmp_path / "empty.prototxt"
    path.write_bytes(b"")
    assert parse_text_file(path) == {}


def test_parse_text_file_names_the_file_in_syntax_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.prototxt"
    path.write_text("layer {\n  name: 'a'\n  top: }\n")
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_text_file(path)
    assert info.value.path == str(path)
    assert (info.value.line, info.value.column) == (3, 8)
    assert str(info.value).startswith(f"{path}: line 3, column 8: expected a value after 'top:'")


def test_parse_text_file_rejects_invalid_utf8_with_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.prototxt"
    path.write_bytes('name: "x"\n# caf\u00e9\n'.encode("latin-1"))
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_text_file(path)
    error = info.value
    assert error.path == str(path)
    assert error.offset == 15
    assert (error.line, error.column) == (2, 6)
    assert "not valid UTF-8" in error.message and "0xe9" in error.message


def test_parse_text_file_column_counts_characters_before_a_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "mixed.prototxt"
    path.write_bytes('a: "\u00e9\u00e9"\n'.encode() + b'b: "\xff"\n')
    with pytest.raises(PrototxtSyntaxError) as info:
        parse_text_file(path)
    assert (info.value.line, info.value.column, info.value.offset) == (2, 5, 14)


def test_parse_text_file_rejects_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "model.caffemodel"
    path.write_bytes(b"\n\x05LeNet\x12\x00\xff\x01")
    with pytest.raises(InputFileError) as info:
        parse_text_file(path)
    assert "this looks like a binary file (a .caffemodel?), not a prototxt" in info.value.message
    assert info.value.offset == 8
    assert info.value.path == str(path)


def test_parse_text_file_rejects_a_real_caffemodel() -> None:
    _require_models()
    with pytest.raises(InputFileError, match=r"binary file \(a \.caffemodel\?\)"):
        parse_text_file(MODELS / "lenet-v2" / "lenet_iter_10000.caffemodel")


def test_parse_text_file_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.prototxt"
    with pytest.raises(InputFileError) as info:
        parse_text_file(path)
    assert info.value.path == str(path)
    assert "no such file" in info.value.message


def test_parse_text_file_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as info:
        parse_text_file(tmp_path)
    assert info.value.path == str(tmp_path)
    assert "directory" in info.value.message


@pytest.mark.parametrize(
    ("exception", "fragment"),
    [(PermissionError(13, "Permission denied"), "permission denied"), (OSError(5, "I/O error"), "I/O error")],
)
def test_parse_text_file_unreadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exception: OSError, fragment: str
) -> None:
    # Simulated, because the tests may run as root, for whom chmod 000 does not stop reading.
    path = tmp_path / "locked.prototxt"
    path.write_text("a: 1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise exception

    monkeypatch.setattr(prototxt_text, "open", refuse, raising=False)
    with pytest.raises(InputFileError) as info:
        parse_text_file(path)
    assert info.value.path == str(path)
    assert fragment in info.value.message


def test_parse_text_file_path_with_nul(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        parse_text_file(str(tmp_path / "a\0b"))


# -- real Caffe prototxts --------------------------------------------------------------------


KNOWN_PROTOTXTS = [
    "caffe-reference/a_lenet/deploy.prototxt",
    "caffe-reference/a_lenet_v1/deploy_v1.prototxt",
    "caffe-reference/b_resnet_block/deploy.prototxt",
    "caffe-reference/c_deconv_prelu/deploy.prototxt",
    "caffe-reference/d_grouped/deploy.prototxt",
    "caffe-reference/e_recurrent/deploy.prototxt",
    "cifar10-quick-v1/cifar10_quick.prototxt",
    "cifar10-quick-v1/cifar10_quick_train_test.prototxt",
    "cifar10-quick-v2-hdf5/cifar10_quick.prototxt",
    "cifar10-quick-v2-hdf5/cifar10_quick_train_test.prototxt",
    "hyperlpr-finemapping/fp16/HorizonalFinemapping.prototxt",
    "hyperlpr-finemapping/fp32/HorizonalFinemapping.prototxt",
    "hyperlpr-segfree-fp16/SegmenationFree-Inception.prototxt",
    "lenet-v1/lenet.prototxt",
    "lenet-v1/lenet_train_test.prototxt",
    "lenet-v2/lenet.prototxt",
    "mtcnn/det1.prototxt",
    "mtcnn/det2.prototxt",
    "mtcnn/det3.prototxt",
    "mtcnn/det4.prototxt",
    "opencv-dnn-layers/layer_convolution.prototxt",
    "opencv-dnn-layers/layer_deconvolution.prototxt",
    "opencv-dnn-layers/layer_inner_product.prototxt",
    "resnet50-head-bn/test.prototxt",
    "ultraface-rfb320/RFB-320.prototxt",
    "yunet-libfacedetection/yufacedetectnet-open-v1.prototxt",
]

_REAL_PROTOTXTS = sorted(MODELS.glob("**/*.prototxt")) if MODELS.is_dir() else []


def _require_models() -> None:
    """Fail (never skip) when the shared test data is missing: these tests are the point."""
    if not MODELS.is_dir():
        pytest.fail(
            f"the shared Caffe test models are missing: expected a directory at {MODELS.resolve()} "
            "(the repo at /work/main, the data at /work/shared/caffe-models)"
        )


def _parse_model(relative: str) -> dict[str, list[Any]]:
    _require_models()
    return parse_text_file(MODELS / relative)


def _layers(net: dict[str, list[Any]]) -> list[dict[str, list[Any]]]:
    return net.get("layer", []) + net.get("layers", [])


def _by_name(net: dict[str, list[Any]], name: str) -> dict[str, list[Any]]:
    (layer,) = [layer for layer in _layers(net) if layer["name"] == [name]]
    return layer


def test_all_known_real_prototxts_are_present() -> None:
    _require_models()
    found = {path.relative_to(MODELS).as_posix() for path in _REAL_PROTOTXTS}
    missing = sorted(set(KNOWN_PROTOTXTS) - found)
    assert not missing, f"real prototxts missing under {MODELS.resolve()}: {missing}"


@pytest.mark.parametrize(
    "path",
    _REAL_PROTOTXTS or [None],
    ids=lambda p: p.relative_to(MODELS).as_posix() if isinstance(p, Path) else "missing-models",
)
def test_every_real_prototxt_parses(path: Path | None) -> None:
    _require_models()
    assert path is not None, f"no *.prototxt found under {MODELS.resolve()}"
    text = path.read_text(encoding="utf-8")
    net = parse_text_file(path)
    layers = _layers(net)
    # the layer count agrees with an independent, line-based count of layer openings
    openings = re.findall(r"^\s*layers?\s*\{", text, flags=re.MULTILINE)
    assert len(layers) == len(openings) > 0
    assert ("layer" in net) != ("layers" in net), "a net uses either V2 'layer' or V1 'layers'"
    for layer in layers:
        assert len(layer["name"]) == 1 and isinstance(layer["name"][0], str)
        assert len(layer["type"]) == 1 and isinstance(layer["type"][0], str)
        for key in ("bottom", "top"):
            assert all(isinstance(blob, str) for blob in layer.get(key, []))
    if "input_dim" in net:
        assert net["input"] and len(net["input_dim"]) == 4 * len(net["input"])
        assert all(type(dim) is int and dim > 0 for dim in net["input_dim"])


def test_real_lenet_v2() -> None:
    net = _parse_model("lenet-v2/lenet.prototxt")
    assert net["name"] == ["LeNet"]
    assert "layers" not in net and "input" not in net
    names = [layer["name"][0] for layer in net["layer"]]
    assert names == ["data", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"]
    types = [layer["type"][0] for layer in net["layer"]]
    assert types == [
        "Input", "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU",
        "InnerProduct", "Softmax",
    ]  # fmt: skip
    data = _by_name(net, "data")
    assert data["input_param"] == [{"shape": [{"dim": [64, 1, 28, 28]}]}]
    conv1 = _by_name(net, "conv1")
    assert conv1["bottom"] == ["data"] and conv1["top"] == ["conv1"]
    assert conv1["param"] == [{"lr_mult": [1]}, {"lr_mult": [2]}]
    assert conv1["convolution_param"] == [
        {
            "num_output": [20],
            "kernel_size": [5],
            "stride": [1],
            "weight_filler": [{"type": ["xavier"]}],
            "bias_filler": [{"type": ["constant"]}],
        }
    ]
    assert _by_name(net, "pool1")["pooling_param"] == [{"pool": ["MAX"], "kernel_size": [2], "stride": [2]}]
    assert _by_name(net, "ip2")["inner_product_param"][0]["num_output"] == [10]
    assert _by_name(net, "relu1")["bottom"] == _by_name(net, "relu1")["top"] == ["ip1"]


def test_real_lenet_v1_uses_layers_with_enum_types() -> None:
    net = _parse_model("lenet-v1/lenet.prototxt")
    assert "layer" not in net
    assert net["input"] == ["data"]
    assert net["input_dim"] == [64, 1, 28, 28]
    types = [layer["type"][0] for layer in net["layers"]]
    assert types == [
        "CONVOLUTION", "POOLING", "CONVOLUTION", "POOLING", "INNER_PRODUCT", "RELU", "INNER_PRODUCT",
        "SOFTMAX",
    ]  # fmt: skip
    conv1 = _by_name(net, "conv1")
    assert conv1["blobs_lr"] == [1, 2]
    assert conv1["convolution_param"][0]["weight_filler"] == [{"type": ["xavier"]}]
    assert _by_name(net, "pool2")["pooling_param"][0]["pool"] == ["MAX"]


def test_real_lenet_v1_train_test_has_one_data_layer_per_phase() -> None:
    net = _parse_model("lenet-v1/lenet_train_test.prototxt")
    data = [layer for layer in net["layers"] if layer["name"] == ["mnist"]]
    assert [layer["type"] for layer in data] == [["DATA"], ["DATA"]]
    assert [layer["include"] for layer in data] == [[{"phase": ["TRAIN"]}], [{"phase": ["TEST"]}]]
    assert data[0]["top"] == ["data", "label"]


def test_real_cifar10_v2_train_test() -> None:
    net = _parse_model("cifar10-quick-v2-hdf5/cifar10_quick_train_test.prototxt")
    train = net["layer"][0]
    assert train["type"] == ["Data"]
    assert train["include"] == [{"phase": ["TRAIN"]}]
    assert train["data_param"][0]["backend"] == ["LMDB"]
    assert train["data_param"][0]["batch_size"] == [100]


def test_real_mtcnn_det1_has_legacy_inputs() -> None:
    net = _parse_model("mtcnn/det1.prototxt")
    assert net["name"] == ["PNet"]
    assert net["input"] == ["data"]
    assert net["input_dim"] == [1, 3, 12, 12]
    names = [layer["name"][0] for layer in net["layer"]]
    assert names == [
        "conv1", "PReLU1", "pool1", "conv2", "PReLU2", "conv3", "PReLU3", "conv4-1", "conv4-2", "prob1",
    ]  # fmt: skip
    assert _by_name(net, "PReLU1")["type"] == ["PReLU"]
    conv1 = _by_name(net, "conv1")
    assert conv1["param"] == [{"lr_mult": [1], "decay_mult": [1]}, {"lr_mult": [2], "decay_mult": [0]}]


def test_real_mtcnn_det2_commented_out_fields_are_ignored() -> None:
    net = _parse_model("mtcnn/det2.prototxt")
    params = _by_name(net, "conv5-1")["inner_product_param"]
    assert params == [
        {
            "num_output": [2],
            "weight_filler": [{"type": ["xavier"]}],
            "bias_filler": [{"type": ["constant"], "value": [0]}],
        }
    ]


def test_real_opencv_layer_single_quotes_and_odd_layout() -> None:
    net = _parse_model("opencv-dnn-layers/layer_convolution.prototxt")
    assert net["input"] == ["input"] and net["input_dim"] == [2, 6, 75, 113]
    (layer,) = net["layer"]
    assert list(layer) == ["type", "convolution_param", "name", "bottom", "top"]
    param = layer["convolution_param"][0]
    assert param["group"] == [3]
    assert [param[key] for key in ("kernel_h", "kernel_w", "stride_h", "stride_w")] == [[4], [5], [2], [3]]
    assert param["weight_filler"] == [{"type": ["uniform"], "min": [-1], "max": [1]}]
    # integers stay int even where Caffe's schema says float: the schema layer converts
    assert type(param["weight_filler"][0]["min"][0]) is int


def test_real_resnet_head_with_tabs() -> None:
    net = _parse_model("resnet50-head-bn/test.prototxt")
    assert net["name"] == ["ResNet-50"]
    assert net["input_dim"] == [1, 3, 224, 224]
    assert _by_name(net, "bn_conv1")["batch_norm_param"] == [{"use_global_stats": [True]}]
    assert _by_name(net, "scale_conv1")["scale_param"] == [{"bias_term": [True]}]


def test_real_yunet_input_shape_floats_and_comments() -> None:
    net = _parse_model("yunet-libfacedetection/yufacedetectnet-open-v1.prototxt")
    assert net["input"] == ["data"]
    assert net["input_shape"] == [{"dim": [1, 3, 240, 320]}]
    priorbox = _by_name(net, "conv3_3_norm_mbox_priorbox")["prior_box_param"][0]
    assert priorbox["min_size"] == [10.0, 16.0, 24.0]
    assert priorbox["variance"] == [0.10000000149, 0.10000000149, 0.20000000298, 0.20000000298]
    assert priorbox["clip"] == [False]
    detection = _by_name(net, "detection_out")
    assert detection["include"] == [{"phase": ["TEST"]}]
    assert detection["detection_output_param"][0]["nms_param"] == [{"nms_threshold": [0.15], "top_k": [100]}]
    assert detection["detection_output_param"][0]["code_type"] == ["CENTER_SIZE"]


def test_real_ultraface_has_no_net_name_and_numeric_layer_names() -> None:
    net = _parse_model("ultraface-rfb320/RFB-320.prototxt")
    assert list(net) == ["layer"]
    assert net["layer"][0]["input_param"] == [{"shape": [{"dim": [1, 3, 240, 320]}]}]
    assert net["layer"][1]["name"] == ["245"]


def test_real_reference_negative_floats() -> None:
    net = _parse_model("caffe-reference/c_deconv_prelu/deploy.prototxt")
    prelu = _by_name(net, "prelu1")["prelu_param"][0]
    assert prelu["channel_shared"] == [False]
    assert prelu["filler"] == [{"type": ["uniform"], "min": [-0.5], "max": [0.5]}]


# -- properties ------------------------------------------------------------------------------


_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]{0,7}"
_keys = st.one_of(
    st.from_regex(_IDENTIFIER, fullmatch=True),
    st.from_regex(r"\[[a-z]{1,4}(\.[a-z]{1,4}){0,2}\]", fullmatch=True),
)
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.from_regex(_IDENTIFIER, fullmatch=True),
)
_messages = st.recursive(
    st.dictionaries(_keys, st.lists(_scalars, max_size=4), max_size=4),
    lambda children: st.dictionaries(_keys, st.lists(st.one_of(_scalars, children), max_size=4), max_size=4),
    max_leaves=25,
)

_RESERVED_WORDS = {"true", "false", "True", "False"}


def _quote(value: str, rnd: random.Random) -> str:
    """One string literal for ``value``, escaping characters in one of several equivalent ways."""
    quote = rnd.choice(["'", '"'])
    out = [quote]
    for char in value:
        code = ord(char)
        if char in (quote, "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif code < 0x20 or code == 0x7F:
            out.append(rnd.choice([f"\\{code:03o}", f"\\x{code:02x}"]))
        elif code < 0x80:
            out.append(char)
        else:
            style = rnd.randrange(3)
            if style == 0:
                out.append(char)
            elif style == 1:
                out.append("".join(f"\\{byte:03o}" for byte in char.encode("utf-8")))
            else:
                out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    out.append(quote)
    return "".join(out)


def _format_scalar(value: Any, rnd: random.Random) -> str:
    if isinstance(value, bool):
        return rnd.choice(["true", "True"]) if value else rnd.choice(["false", "False"])
    if isinstance(value, int):
        sign = "-" if value < 0 else rnd.choice(["", "+"])
        magnitude = abs(value)
        style = rnd.randrange(3)
        if style == 1:
            return f"{sign}0x{magnitude:x}"
        if style == 2 and magnitude:
            return f"{sign}0{magnitude:o}"
        return f"{sign}{magnitude}"
    if isinstance(value, float):
        text = repr(value)
        if math.isfinite(value) and rnd.random() < 0.3:
            text += "f"
        if text.startswith("-") and rnd.random() < 0.3:
            text = "- " + text[1:]
        return text
    assert isinstance(value, str)
    bare_ok = (
        re.fullmatch(_IDENTIFIER, value) is not None
        and value not in _RESERVED_WORDS
        and value.lower() not in {"inf", "infinity", "nan"}
    )
    if bare_ok and rnd.random() < 0.5:
        return value
    if len(value) > 1 and rnd.random() < 0.3:
        cut = rnd.randrange(1, len(value))
        return _quote(value[:cut], rnd) + rnd.choice([" ", "\n", " # split\n"]) + _quote(value[cut:], rnd)
    return _quote(value, rnd)


def _serialize(message: dict[str, list[Any]], rnd: random.Random) -> str:
    """Text for ``message``, choosing randomly among the equivalent spellings the parser accepts."""

    def space() -> str:
        return rnd.choice([" ", "\n", "\t", "  # comment\n", "\r\n"])

    parts: list[str] = []
    for key, values in message.items():
        if not values:
            parts.append(f"{key}:{space()}[]")
            continue
        all_messages = all(isinstance(v, dict) for v in values)
        all_scalars = not any(isinstance(v, dict) for v in values)
        if (all_messages or all_scalars) and rnd.random() < 0.3:
            items = []
            for value in values:
                if isinstance(value, dict):
                    opener, closer = rnd.choice(["{}", "<>"])
                    items.append(f"{opener}{space()}{_serialize(value, rnd)}{space()}{closer}")
                else:
                    items.append(_format_scalar(value, rnd))
            colon = rnd.choice([":", ""]) if all_messages else ":"
            parts.append(f"{key}{colon}{space()}[{space()}{(',' + space()).join(items)}{space()}]")
        else:
            for value in values:
                if isinstance(value, dict):
                    opener, closer = rnd.choice(["{}", "<>"])
                    colon = rnd.choice([":", ""])
                    body = _serialize(value, rnd)
                    parts.append(f"{key}{colon}{space()}{opener}{space()}{body}{space()}{closer}")
                else:
                    parts.append(f"{key}:{space()}{_format_scalar(value, rnd)}")
        if rnd.random() < 0.3:
            parts[-1] += rnd.choice([",", ";"])
    return space().join(parts)


def _typed(value: Any) -> Any:
    """A form in which ``True`` and ``1`` (and ``1`` and ``1.0``) compare unequal."""
    if isinstance(value, dict):
        return {key: [_typed(v) for v in values] for key, values in value.items()}
    return (type(value).__name__, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=_messages, rnd=st.randoms(use_true_random=False))
def test_parse_inverts_serialize(message: dict[str, list[Any]], rnd: random.Random) -> None:
    text = _serialize(message, rnd)
    assert _typed(parse_text(text)) == _typed(message), text


_SYNTAX_ALPHABET = st.sampled_from([*"{}<>[]:;,.-+/ \t\n#\"'\\abefnxuU0179_", "\u00e9", "\r", "\0"])


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(_SYNTAX_ALPHABET, max_size=60), st.text(max_size=30)))
def test_arbitrary_text_never_raises_anything_else(text: str) -> None:
    try:
        result = parse_text(text)
    except PrototxtSyntaxError as error:
        assert error.line is not None and error.line >= 1
        assert error.column is not None and error.column >= 1
    else:
        assert isinstance(result, dict)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_real_prototxt_never_raises_anything_else(data: st.DataObject) -> None:
    _require_models()
    text = (MODELS / "lenet-v2" / "lenet.prototxt").read_text(encoding="utf-8")
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(text)))
        if data.draw(st.booleans()):
            text = text[:at] + text[at + data.draw(st.integers(1, 20)) :]
        else:
            text = text[:at] + data.draw(st.text(_SYNTAX_ALPHABET, min_size=1, max_size=5)) + text[at:]
    with contextlib.suppress(PrototxtSyntaxError):
        parse_text(text)
