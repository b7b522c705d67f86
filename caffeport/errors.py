"""The errors caffeport raises for bad input.

Every error a user can cause with a file or an argument is a `CaffeportError`.
The CLI prints ``str(error)`` on one line and exits 1, so each message names the
file and, where it applies, the layer and the byte offset (or line and column)
that made it fail, and says what to do where there is something to do.
"""

from __future__ import annotations

import os


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
