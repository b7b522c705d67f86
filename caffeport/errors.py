"""The errors caffeport raises for bad input.

Every error a user can cause with a file or an argument is a `CaffeportError`.
The CLI prints ``str(error)`` on one line and exits 1, so each message names the
file and, where it applies, the layer and the byte offset (or line and column)
that made it fail, and says what to do where there is something to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar


class CaffeportError(Exception):
    """Base class of every error caused by input: files, arguments, models."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        layer: str | None = None,
        offset: int | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.layer = layer
        self.offset = offset
        self.line = line
        self.column = column
        super().__init__(self._format())

    def _format(self) -> str:
        where: list[str] = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}" + (f", column {self.column}" if self.column is not None else ""))
        if self.layer is not None:
            where.append(f"layer {self.layer!r}")
        if self.offset is not None:
            where.append(f"byte offset {self.offset}")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class InputFileError(CaffeportError):
    """A file is missing, unreadable, a directory, empty, or of the wrong kind."""


class DecodeError(CaffeportError):
    """A binary file (caffemodel, binaryproto) is malformed at a byte offset."""


class PrototxtSyntaxError(CaffeportError):
    """A prototxt does not parse; names line and column."""


class ModelStructureError(CaffeportError):
    """The model parses but is inconsistent (blob sizes, shapes, duplicate names)."""


class ShapeInferenceError(CaffeportError):
    """A layer's parameters and its input shapes cannot produce an output shape."""


class OutputError(CaffeportError):
    """The output cannot be written where or as asked."""


class InternalDecodeError(DecodeError):
    """A malformed file tripped a check caffeport does not make explicitly.

    The read entry points convert a stray ``ValueError``, ``OverflowError``,
    ``struct.error``, ``UnicodeDecodeError``, ``KeyError`` or ``IndexError``
    raised while decoding into this error naming the file, so the user still
    gets one clean line; reaching it is a caffeport bug (a missing explicit
    check) and the hostile-input tests treat it as a failure.
    """


class UnsupportedModelError(CaffeportError):
    """The reference forward (`caffeport.run`) does not implement some layer types or parameter values.

    The message lists every such layer at once, by name, before any work is done.
    """


class InputError(CaffeportError):
    """An input given to `caffeport.run` is missing, unknown to the net, or of the wrong shape."""


# ---------------------------------------------------------------- options named in messages
#
# The Python API and the command line spell the same option differently (``force=True`` and ``--force``), and a
# message that says "pass --force" to someone who called ``caffeport.convert(...)`` points at nothing. A message
# that names options is written as a template with a field per option; `option_error` renders it the API's way and
# keeps the template on the error, and `for_cli` renders the same error the command line's way.

#: the command line's flag for an option, where it is not ``--`` + the keyword with ``-`` for ``_``
CLI_FLAGS: dict[str, str] = {"format": "-f", "prototxt": "-p", "include_weightless": "-n",
                             "preprocessing": "--mean/--scale/--swap-rb"}

E = TypeVar("E", bound=CaffeportError)


class _Spelling(dict[str, str]):
    """Renders the fields of an option template, the Python API's way or the command line's (``cli``).

    ``{force}``: ``force=True`` / ``--force``; ``{format=keras3}``:
    ``format='keras3'`` / ``-f keras3``; ``{keras_model=}``: ``keras_model=`` /
    ``--keras-model `` (a value follows); a field named in ``fill``: its text,
    the same both ways (for what is not an option: a file name, a spec).
    """

    def __init__(self, cli: bool, flags: Mapping[str, str], fill: Mapping[str, object]) -> None:
        super().__init__()
        self.cli = cli
        self.flags = flags
        self.fill = fill

    def __missing__(self, field: str) -> str:
        if field in self.fill:
            return str(self.fill[field])
        name, sep, value = field.partition("=")
        if self.cli:
            flag = self.flags.get(name, "--" + name.replace("_", "-"))
            return f"{flag} {value}" if value else f"{flag} " if sep else flag
        return f"{name}={value!r}" if value else f"{name}=" if sep else f"{name}=True"


def option_error(cls: type[E], template: str, *, fill: Mapping[str, object] | None = None, **where: Any) -> E:
    """``cls(message, **where)`` whose message names options in the Python API's spelling (``force=True``).

    ``template`` is literal text with a field per option (see `_Spelling`);
    what varies and is not an option goes in ``fill`` under a field name of
    its own (``"{keras_model=}{spec}: cannot import it"``, ``fill={"spec":
    repr(spec)}``), so that no brace in it is read as a field. The template
    stays on the error (``error.option_template``) so that `for_cli` can say
    ``--force`` instead.
    """
    fill = dict(fill or {})
    error = cls(template.format_map(_Spelling(False, CLI_FLAGS, fill)), **where)
    error.option_template = (template, fill)  # type: ignore[attr-defined]
    return error


def for_cli(error: CaffeportError, flags: Mapping[str, str] | None = None) -> str:
    """``str(error)`` as a command line prints it: options as its flags (``--force``), on one line.

    ``flags`` overrides `CLI_FLAGS` for a program whose flags are spelled
    otherwise (caffe-weight-converter's ``-u/--skip_unknown``). An error not
    made by `option_error` keeps its own text.
    """
    text = str(error)
    made = getattr(error, "option_template", None)
    if isinstance(made, tuple) and text.endswith(error.message):
        template, fill = made
        cli = template.format_map(_Spelling(True, {**CLI_FLAGS, **(flags or {})}, fill))
        text = text[: len(text) - len(error.message)] + cli
    return " ".join(text.splitlines())
