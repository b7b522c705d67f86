"""A schema-less parser of the protobuf text format, as Caffe uses it in ``.prototxt`` files.

Caffe reads ``deploy.prototxt`` and ``solver.prototxt`` with protobuf's ``TextFormat`` and a
compiled ``caffe.proto`` schema. caffeport runs without protobuf and without that schema, so this
module does only the syntactic half of the job: it turns text into nested plain Python values, and
the caller applies a schema afterwards.

The parse form is ``dict[str, list[Any]]``: every field maps to the list of its values in the
order they appear. Without a schema the parser cannot know whether ``bottom`` is repeated or
``name`` is a scalar, so it never collapses a list; it also keeps enum values (``MAX``,
``CONVOLUTION``) as plain strings because only the schema knows their numbers. Nothing is lost, so
the schema layer can report "field given twice" or "unknown enum value" with full knowledge.

The accepted syntax follows protobuf's text format closely (short ``[a, b]`` lists, ``<...>``
messages, optional ``:`` before a message, optional ``,``/``;`` separators, ``#`` comments,
C-style string escapes, adjacent string concatenation, octal/hex integers, ``inf``/``nan``, a sign
separated from its number by whitespace), so that a file Caffe accepts parses here and a file
Caffe rejects fails here with a line and column instead of later with a confusing schema error.

Errors are always ``PrototxtSyntaxError`` (or ``InputFileError`` for a file that cannot be read);
the parser uses an explicit stack and bounds nesting like protobuf does, so no input can make it
raise ``RecursionError`` or anything else. Line and column numbers are 1-based and count
characters (a tab is one column); only the character offset of each token is recorded while
parsing, and line/column are computed once, when an error is raised, to keep parsing linear and
cheap.
"""

from __future__ import annotations

import os
import re
from typing import Any

from caffeport.errors import InputFileError, PrototxtSyntaxError
from caffeport.readers.files import check_not_foreign

__all__ = ["parse_text", "parse_text_file"]

# protobuf's TextFormat parser refuses messages nested deeper than 100 by default, so Caffe would
# reject such a file too; the bound also caps the depth of the Python structures we hand out.
_MAX_DEPTH = 100

# Python (3.11+, and late 3.10 releases) refuses to convert decimal strings longer than this by
# default; checking it ourselves gives the same error on every version. No Caffe field holds a
# number anywhere near this long, so such a literal is garbage, not data.
_MAX_INT_DIGITS = 4300

_BINARY_MESSAGE = "this looks like a binary file (a .caffemodel?), not a prototxt"

# The tokenizer matches one token at a time, at the parser's request, with this regex (leading whitespace
# included). Every repetition in it is of a single character class: Python's regex engine keeps a backtracking
# record per iteration of a repeated *group* (hundreds of bytes per character of the match), so a group such as
# ``(?:[^"\\]|\\.)*`` over an 8 MB string costs gigabytes; a repeated character class costs nothing. Strings with
# escapes, and comments, are therefore scanned in a loop over such runs (see `_Parser._advance`). The number
# alternative deliberately swallows trailing letters, digits and dots ("1.5.3", "10abc", "08") so that a
# malformed number is reported as one bad token rather than as a confusing "unexpected identifier" right after a
# valid-looking prefix; an exponent sign ("1e+5") is taken once, right after the 'e'.
_TOKEN_RE = re.compile(
    r"""
    [ \t\r\n\v\f]*
    (?:
      (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>(?:[0-9]|\.[0-9])[A-Za-z0-9_.]*(?:(?<=[eE])[+-][0-9][A-Za-z0-9_.]*)?)
    | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
    | (?P<punct>[{}<>\[\]:;,./+-])
    | (?P<comment>\#)
    | (?P<quote>["'])
    | (?P<eof>\Z)
    | (?P<stray>.)
    )
    """,
    re.VERBOSE | re.DOTALL,
)
# A run of string characters up to the next backslash, newline or closing quote, for each quote character.
_STRING_RUN = {'"': re.compile(r'[^"\\\n]*'), "'": re.compile(r"[^'\\\n]*")}

_HEX_INT_RE = re.compile(r"0[xX][0-9a-fA-F]+")
_OCT_INT_RE = re.compile(r"0[0-7]+")
_FLOAT_RE = re.compile(r"(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[fF]?")

_ESCAPE_RE = re.compile(
    r"""\\(?:
          (?P<oct>[0-7]{1,3})
        | x(?P<hex>[0-9a-fA-F]{1,2})
        | u(?P<u4>[0-9a-fA-F]{4})
        | U(?P<u8>[0-9a-fA-F]{8})
        | (?P<simple>[ntr\\'"abfv?])
    )""",
    re.VERBOSE,
)
_LOW_SURROGATE_ESCAPE_RE = re.compile(r"\\u([dD][c-fC-F][0-9a-fA-F]{2})")

_SIMPLE_ESCAPES = {
    "n": b"\n",
    "t": b"\t",
    "r": b"\r",
    "\\": b"\\",
    "'": b"'",
    '"': b'"',
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "v": b"\v",
    "?": b"?",
}

_BOOLS = {"true": True, "True": True, "false": False, "False": False}
_SPECIAL_FLOATS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}

_CLOSER = {"{": "}", "<": ">"}

# Token kinds besides the punctuation characters, which are their own kind.
_IDENT = "ident"
_NUMBER = "number"
_STRING = "string"
_ERROR = "error"
_EOF = "eof"


def parse_text(text: str, path: str | None = None) -> dict[str, list[Any]]:
    """Parse protobuf text format into ``{field: [values in order]}``, recursively.

    ``path`` is only used in error messages, so that a caller that read the text itself can still
    name the file. Raises ``PrototxtSyntaxError`` (with 1-based line and column) on any malformed
    input and never anything else.
    """
    if text.startswith("\ufeff"):
        # Some Windows editors write a BOM. It carries no meaning, and an error about an
        # invisible character at line 1, column 1 would only confuse users.
        text = text[1:]
    nul = text.find("\0")
    if nul >= 0:
        line, column = _line_column(text, nul)
        raise PrototxtSyntaxError(
            f"{_BINARY_MESSAGE} (it contains a NUL character)", path=path, line=line, column=column
        )
    return _Parser(text, path).parse()


def parse_text_file(path: str | os.PathLike[str]) -> dict[str, list[Any]]:
    """Read a prototxt (or solver) file as UTF-8 and parse it with `parse_text`.

    Reading bytes and decoding here, rather than opening in text mode, lets us tell a binary
    ``.caffemodel`` passed by mistake (NUL bytes) apart from a text file in the wrong encoding,
    and report the byte offset of the first bad byte in both cases.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise InputFileError("no such file", path=name) from None
    except IsADirectoryError:
        raise InputFileError("is a directory, not a prototxt file", path=name) from None
    except PermissionError:
        raise InputFileError("permission denied: cannot read the file", path=name) from None
    except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL character inside the path
        raise InputFileError(f"cannot read the file: {exc}", path=name) from None
    check_not_foreign(data[:512], name)
    nul = data.find(b"\0")
    if nul >= 0:
        # A wrong kind of file rather than a broken prototxt, hence InputFileError here; the
        # offset of the first NUL lets the user check with a hex viewer.
        raise InputFileError(f"{_BINARY_MESSAGE} (it contains a NUL byte)", path=name, offset=nul)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        raise PrototxtSyntaxError(
            f"the file is not valid UTF-8 text (bad byte 0x{data[exc.start]:02x}); save it as UTF-8",
            path=name,
            line=data.count(b"\n", 0, exc.start) + 1,
            column=column,
            offset=exc.start,
        ) from None
    del data  # the text is all the parse needs: the bytes would add the file's size to the peak
    return parse_text(text, path=name)


def _string_end(text: str, start: int) -> int:
    """The offset just past the closing quote of the string literal opening at ``start``, or -1 if unterminated.

    Strings may not span lines, as in protobuf, and a backslash escapes any character but a newline.
    The scan takes one step per escape (runs between escapes are skipped by a character-class
    regex), so it is linear and keeps no state.
    """
    quote = text[start]
    run = _STRING_RUN[quote].match
    size = len(text)
    pos = start + 1
    while True:
        found = run(text, pos)
        assert found is not None  # a starred character class always matches
        pos = found.end()
        if pos >= size or text[pos] == "\n":
            return -1
        if text[pos] == quote:
            return pos + 1
        if pos + 1 >= size or text[pos + 1] == "\n":  # a backslash before the end of the line escapes nothing
            return -1
        pos += 2


def _line_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset; only called when raising, so O(n) is fine."""
    line_start = text.rfind("\n", 0, offset) + 1
    return text.count("\n", 0, offset) + 1, offset - line_start + 1


class _Frame:
    """One open ``{...}``/``<...>`` message or ``[...]`` list of messages on the parser's stack.

    An explicit stack instead of recursion means deep input cannot overflow the Python stack.
    """

    __slots__ = ("closer", "container", "name", "need_element", "open_at")

    def __init__(self, container: Any, closer: str | None, name: str, open_at: int) -> None:
        self.container = container  # dict for a message, the field's value list for a list
        self.closer = closer  # "}", ">", "]", or None for the top level
        self.name = name  # field name, for error messages
        self.open_at = open_at  # offset of the opening delimiter, for "never closed" errors
        self.need_element = True  # lists only: is the next token an element (or a ',' / ']')?


class _Parser:
    """Reads tokens one at a time, as the parse needs them, and walks them with an explicit stack.

    Only the current token is held (its kind, value and span), never a list of all tokens: a dense
    ``[1,1,1,...]`` list is millions of tokens, and a Python object or three per token would cost
    about a hundred times the file's size.
    """

    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path
        #: the current token: its kind, its value (an identifier's or number's text, a string's body
        #: without the quotes, or an error token's message) and where it starts and ends in the text
        self.kind = _EOF
        self.value = ""
        self.start = 0
        self.end = 0
        self.depth = 0
        self._advance()

    # -- tokens -----------------------------------------------------------------------------

    def _advance(self) -> None:
        """Make the next token current (``eof`` at the end of the text).

        A lexical error becomes an ``error`` token instead of being raised at once, so that the
        parser reports whichever problem comes first in the file, syntactic or lexical.
        """
        text = self.text
        pos = self.end
        while True:
            match = _TOKEN_RE.match(text, pos)
            assert match is not None  # `eof` or `stray` matches where nothing else does
            group = match.lastgroup
            if group != "comment":
                break
            pos = text.find("\n", match.end())
            if pos < 0:
                self.kind, self.value, self.start, self.end = _EOF, "", len(text), len(text)
                return
        assert group is not None
        start = match.start(group)
        end = match.end()
        self.start, self.end = start, end
        if group == "eof":
            self.kind, self.value = _EOF, ""
        elif group == "punct":
            self.kind = self.value = text[start]
        elif group == "ident":
            self.kind, self.value = _IDENT, match[group]
        elif group == "number":
            self.kind, self.value = _NUMBER, match[group]
        elif group == "string":
            self.kind, self.value = _STRING, text[start + 1 : end - 1]
        elif group == "quote":
            string_end = _string_end(text, start)
            if string_end < 0:
                self.kind = _ERROR
                self.value = f"unterminated string: expected a closing {text[start]} before the end of the line"
            else:
                self.kind, self.value, self.end = _STRING, text[start + 1 : string_end - 1], string_end
        else:
            self.kind = _ERROR
            self.value = f"unexpected character {text[start]!r} (U+{ord(text[start]):04X})"

    def _error(self, message: str, offset: int) -> PrototxtSyntaxError:
        line, column = _line_column(self.text, offset)
        return PrototxtSyntaxError(message, path=self.path, line=line, column=column)

    def _describe(self) -> str:
        """How the current token is quoted in messages: its text, shortened, or 'end of input'."""
        if self.kind == _EOF:
            return "end of input"
        token = self.text[self.start : min(self.end, self.start + 41)]
        if self.end - self.start > 40:
            token = token[:37] + "..."
        return f"'{token}'"

    def _unexpected(self, expected: str) -> PrototxtSyntaxError:
        """An 'expected X, found Y' error at the current token (or that token's own lexical error)."""
        if self.kind == _ERROR:
            return self._error(self.value, self.start)
        return self._error(f"expected {expected}, found {self._describe()}", self.start)

    def _not_closed(self, frame: _Frame) -> PrototxtSyntaxError:
        """End of input inside a message or list: point at the opener, which is what needs fixing."""
        opener = self.text[frame.open_at]
        what = "list" if frame.closer == "]" else "message"
        return self._error(
            f"'{opener}' opening the {what} for field {frame.name!r} is never closed: "
            f"expected '{frame.closer}', found end of input",
            frame.open_at,
        )

    # -- structure ---------------------------------------------------------------------------

    def parse(self) -> dict[str, list[Any]]:
        root: dict[str, list[Any]] = {}
        stack = [_Frame(root, None, "", 0)]
        while True:
            frame = stack[-1]
            kind = self.kind
            if frame.closer == "]":
                self._list_step(frame, stack)
                continue
            if kind == _EOF:
                if len(stack) == 1:
                    return root
                raise self._not_closed(frame)
            if kind in ("}", ">"):
                self._close_message(frame, stack)
                continue
            name = self._field_name(frame)
            values: list[Any] = frame.container.setdefault(name, [])
            kind = self.kind
            if kind == ":":
                self._advance()
                kind = self.kind
                if kind in ("{", "<"):
                    self._open_message(values, name, stack)
                elif kind == "[":
                    self._open_list(values, name, stack, scalars_allowed=True)
                else:
                    values.append(self._scalar(f"a value after '{name}:'"))
                    self._skip_separator()
            elif kind in ("{", "<"):
                self._open_message(values, name, stack)
            elif kind == "[":
                self._open_list(values, name, stack, scalars_allowed=False)
            else:
                raise self._unexpected(f"':' or '{{' after field name {name!r}")

    def _field_name(self, frame: _Frame) -> str:
        """A plain identifier, or an extension / Any name in brackets, kept as ``[a.b/c]``."""
        if self.kind == _IDENT:
            name = self.value
            self._advance()
            return name
        if self.kind != "[":
            if frame.closer is None:
                raise self._unexpected("a field name")
            raise self._unexpected(f"a field name or '{frame.closer}'")
        self._advance()
        parts = []
        while True:
            if self.kind != _IDENT:
                raise self._unexpected("an identifier in the bracketed extension name")
            parts.append(self.value)
            self._advance()
            kind = self.kind
            if kind == "]":
                self._advance()
                return "[" + "".join(parts) + "]"
            if kind not in (".", "/"):
                raise self._unexpected("'.', '/' or ']' in the bracketed extension name")
            parts.append(kind)
            self._advance()

    def _open_message(self, values: list[Any], name: str, stack: list[_Frame]) -> None:
        opener = self.kind
        at = self.start
        if self.depth >= _MAX_DEPTH:
            raise self._error(
                f"messages are nested more than {_MAX_DEPTH} deep (at field {name!r}); "
                "protobuf, and so Caffe, refuses such input",
                at,
            )
        self._advance()
        self.depth += 1
        message: dict[str, list[Any]] = {}
        values.append(message)
        stack.append(_Frame(message, _CLOSER[opener], name, at))

    def _close_message(self, frame: _Frame, stack: list[_Frame]) -> None:
        kind = self.kind
        if frame.closer is None:
            raise self._unexpected("a field name (there is no open message for this to close)")
        if kind != frame.closer:
            line, column = _line_column(self.text, frame.open_at)
            raise self._unexpected(
                f"'{frame.closer}' to close the message for field {frame.name!r} "
                f"opened at line {line}, column {column}"
            )
        self._advance()
        self.depth -= 1
        stack.pop()
        if stack[-1].closer != "]":
            # Inside a list the ',' between elements is the list's business, not a separator.
            self._skip_separator()

    def _open_list(self, values: list[Any], name: str, stack: list[_Frame], *, scalars_allowed: bool) -> None:
        """Handle ``[...]`` after a field name; a list of scalars is read here in one go.

        A list of messages is pushed on the stack instead, because its elements nest arbitrarily.
        As in protobuf, a list of plain values needs the ':' (``dim: [1, 2]``); only messages may
        omit it.
        """
        frame = _Frame(values, "]", name, self.start)
        self._advance()
        kind = self.kind
        if kind == "]":
            self._advance()
            self._skip_separator()
            return
        if kind in ("{", "<"):
            stack.append(frame)
            return
        if kind == _EOF:
            raise self._not_closed(frame)
        if not scalars_allowed:
            raise self._unexpected(
                f"'{{' or '<' to start a message in the list for field {name!r} "
                f"(a list of plain values needs ':' after the field name)"
            )
        expected = f"a value in the list for field {name!r}"
        append, scalar, advance = values.append, self._scalar, self._advance
        while True:
            if self.kind in ("{", "<"):
                raise self._unexpected(
                    f"a plain value in the list for field {name!r} (it holds values, not messages)"
                )
            append(scalar(expected))
            kind = self.kind
            if kind == "]":
                advance()
                self._skip_separator()
                return
            if kind == _EOF:
                raise self._not_closed(frame)
            if kind != ",":
                raise self._unexpected(f"',' or ']' in the list for field {name!r}")
            advance()
            if self.kind == _EOF:
                raise self._not_closed(frame)

    def _list_step(self, frame: _Frame, stack: list[_Frame]) -> None:
        """Advance a list of messages by one token: an element's opener, a ',' or the ']'."""
        kind = self.kind
        if kind == _EOF:
            raise self._not_closed(frame)
        if frame.need_element:
            if kind not in ("{", "<"):
                raise self._unexpected(f"'{{' or '<' to start a message in the list for field {frame.name!r}")
            frame.need_element = False
            self._open_message(frame.container, frame.name, stack)
        elif kind == ",":
            self._advance()
            frame.need_element = True
        elif kind == "]":
            self._advance()
            stack.pop()
            self._skip_separator()
        else:
            raise self._unexpected(f"',' or ']' in the list for field {frame.name!r}")

    def _skip_separator(self) -> None:
        """A single optional ',' or ';' may follow any field, as protobuf allows."""
        if self.kind in (",", ";"):
            self._advance()

    # -- scalars -----------------------------------------------------------------------------

    def _scalar(self, expected: str) -> Any:
        """Read one scalar value: string(s), number, signed number, bool or identifier."""
        kind = self.kind
        token = self.value
        if kind == _NUMBER:
            at = self.start
            self._advance()
            return self._number(token, at)
        if kind == _STRING:
            return self._strings()
        if kind == _IDENT:
            self._advance()
            if token in _BOOLS:
                return _BOOLS[token]
            return _SPECIAL_FLOATS.get(token.lower(), token)
        if kind in ("-", "+"):
            # protobuf treats the sign as its own token: "- 5" and "-inf" are both fine.
            self._advance()
            kind = self.kind
            value: int | float
            if kind == _NUMBER:
                value = self._number(self.value, self.start)
            elif kind == _IDENT and self.value.lower() in _SPECIAL_FLOATS:
                value = _SPECIAL_FLOATS[self.value.lower()]
            else:
                raise self._unexpected(f"a number after '{token}'")
            self._advance()
            return -value if token == "-" else value
        raise self._unexpected(expected)

    def _number(self, token: str, at: int) -> int | float:
        """Convert a number token with protobuf's rules: a leading 0 means octal, 0x hex."""
        try:
            if token.isdigit() and (token[0] != "0" or len(token) == 1):  # the common case, first
                if len(token) > _MAX_INT_DIGITS:
                    raise ValueError(token)
                return int(token)
            if _HEX_INT_RE.fullmatch(token):
                return int(token[2:], 16)
            if _OCT_INT_RE.fullmatch(token):
                return int(token[1:], 8)
            if _FLOAT_RE.fullmatch(token):
                return float(token.rstrip("fF"))
        except ValueError:  # too long for us, or for a lowered sys.set_int_max_str_digits()
            raise self._error(f"integer literal of {len(token)} digits is too long", at) from None
        if token[0] == "0" and token[1:2].isdigit():
            hint = " (a number with a leading 0 is octal, so only digits 0-7 may follow)"
        else:
            hint = ""
        shown = token if len(token) <= 40 else token[:37] + "..."
        raise self._error(
            f"expected a number (decimal, 0x-hex or 0-octal integer, or float), found '{shown}'{hint}", at
        )

    def _strings(self) -> str:
        """Read one or more adjacent string literals, concatenated as bytes and decoded as UTF-8.

        Concatenating bytes before decoding matters: protobuf's own output escapes non-ASCII
        text byte by byte (``"caf\\303\\251"``), and a split literal may divide one character.
        """
        first = self.start
        body = self.value
        self._advance()
        if self.kind != _STRING and "\\" not in body and body.isascii():
            return body
        data = bytearray(self._unescape(body, first + 1))
        del body
        while self.kind == _STRING:
            data += self._unescape(self.value, self.start + 1)
            self._advance()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(
                f"string is not valid UTF-8 (bad byte 0x{data[exc.start]:02x} at byte {exc.start} "
                "of its value)",
                first,
            ) from None

    def _unescape(self, raw: str, base: int) -> bytes:
        """Turn a literal's body (without quotes) into bytes, resolving C-style escapes.

        ``base`` is the offset of the body in the text, so a bad escape is reported exactly.
        Lone surrogates in the body (possible only when a caller passes such a ``str``) are
        encoded with ``surrogatepass`` and then rejected by the strict UTF-8 decode.
        """
        out = bytearray()
        i = 0
        while True:
            k = raw.find("\\", i)
            if k < 0:
                out += raw[i:].encode("utf-8", "surrogatepass")
                return bytes(out)
            out += raw[i:k].encode("utf-8", "surrogatepass")
            match = _ESCAPE_RE.match(raw, k)
            if match is None:
                raise self._error(
                    f"invalid escape sequence '{raw[k : k + 2]}' in string; expected one of "
                    "\\n \\t \\r \\\\ \\' \\\" \\a \\b \\f \\v \\?, \\NNN (octal), \\xNN (hex), "
                    "\\uXXXX or \\UXXXXXXXX",
                    base + k,
                )
            i = match.end()
            if match["simple"] is not None:
                out += _SIMPLE_ESCAPES[match["simple"]]
            elif match["oct"] is not None:
                code = int(match["oct"], 8)
                if code > 0xFF:
                    raise self._error(f"octal escape '{match.group()}' is above \\377 (one byte)", base + k)
                out.append(code)
            elif match["hex"] is not None:
                out.append(int(match["hex"], 16))
            else:
                code = int(match["u4"] or match["u8"], 16)
                if 0xD800 <= code <= 0xDBFF and match["u4"] is not None:
                    low = _LOW_SURROGATE_ESCAPE_RE.match(raw, i)
                    if low is not None:
                        code = 0x10000 + ((code - 0xD800) << 10) + (int(low[1], 16) - 0xDC00)
                        i = low.end()
                if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                    raise self._error(
                        f"escape '{match.group()}' is not a Unicode character "
                        "(a surrogate must be paired, and code points end at 10FFFF)",
                        base + k,
                    )
                out += chr(code).encode("utf-8")
