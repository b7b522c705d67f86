"""What the code generators share whatever the framework (``-f torch-code``, ``-f keras-code``).

Identifiers made from Caffe names, source-text quoting and comments, line
wrapping to the project's line length (so ``ruff check`` passes on the
generated file), the sources' sha256 for the docstring, and the tests of
which layers are fed by the caller or have known shapes.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import keyword
import re
import textwrap
from collections.abc import Callable
from typing import Any

from caffeport.codegen.registry import NotGenerated, literal
from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Net
from caffeport.layers import LAYER_TYPES, layer_type

__all__ = ["LINE_LENGTH", "Names", "comment", "fed", "identifier", "matlab_note", "quote", "sha256", "shapes_known",
           "stub_params", "wrapped"]

_NOT_IDENTIFIER = re.compile(r"\W|^(?=\d)")
#: the generated file keeps to this project's line length, so ``ruff check`` passes with its rules too
LINE_LENGTH = 120


def identifier(name: str) -> str:
    """``name`` made an identifier the way every generated model makes it: each character that cannot be in one
    becomes ``_`` and a leading digit gets a ``_`` before it (``conv4-1`` -> ``conv4_1``, ``245`` -> ``_245``).

    `Names` builds on it (and also steers clear of keywords, builtins and
    names already given); ``caffeport verify`` pairs a model's layers with
    Caffe's through it, so both follow one rule.
    """
    return _NOT_IDENTIFIER.sub("_", name) or "_"


class Names:
    """Python identifiers for Caffe names (`identifier`): unique, never a keyword, a builtin or one of ``taken``."""

    def __init__(self, taken: frozenset[str] = frozenset()) -> None:
        self.taken = taken
        self.given: dict[str, str] = {}
        self.used: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self.given:
            return self.given[name]
        base = identifier(name)
        if keyword.iskeyword(base) or base in self.taken or hasattr(builtins, base):
            base += "_"
        candidate, n = base, 1
        while candidate in self.used:
            n += 1
            candidate = f"{base}_{n}"
        self.used.add(candidate)
        self.given[name] = candidate
        return candidate


#: what a generated docstring and README say of a net converted with ``--matlab``
MATLAB_NOTE = ("Converted with --matlab: the net was trained in MATLAB on transposed images, and this model is "
               "rewritten for row-major images (kernels' H and W swapped, the first fully connected layer after a "
               "spatial blob reordered): feed images as numpy, PIL or OpenCV hold them; spatial outputs are "
               "row-major too.")


def matlab_note(net: Net) -> str:
    """``MATLAB_NOTE`` for a net the ``matlab_row_major`` pass rewrote, else nothing."""
    return MATLAB_NOTE if net.conversion.matlab else ""


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fed(net: Net, layer: Layer) -> bool:
    """A source layer whose tops the caller gives (Input, or a Data layer standing for an input)."""
    return not layer.bottoms and bool(layer.tops) and all(top in net.inputs for top in layer.tops)


def shapes_known(layer: Layer) -> bool:
    """Every bottom's and top's shape known (only the bottoms' for a type whose tops depend on the values)."""
    if layer.type in LAYER_TYPES and layer_type(layer.type).shape_from_values:
        return all(shape is not None for shape in layer.bottom_shapes)
    return len(layer.top_shapes) >= len(layer.tops) and all(
        shape is not None for shape in [*layer.bottom_shapes, *layer.top_shapes])


def emit(code: Any, emitter: Callable[[Any], None] | None, framework: str) -> str | None:
    """Run ``emitter`` on ``code`` (whose ``layer`` it fills in); the reason the layer cannot be generated, or None.

    The reasons, checked in this order: no emitter for the type, shapes not
    known, the reference's own refusal of the layer, the emitter's
    `NotGenerated` or a shape rule's complaint. The generator writes a stub
    for such a layer.
    """
    layer = code.layer
    if emitter is None:
        return f"caffeport generates no {framework} code for layer type {layer.type!r} yet"
    if not shapes_known(layer):
        return "its shapes are not known (give the deploy prototxt with the input shapes)"
    reason = layer_type(layer.type).unsupported(layer) if layer.type in LAYER_TYPES else None
    if reason is not None:
        return reason
    try:
        emitter(code)
    except NotGenerated as exc:
        return str(exc)
    except ShapeInferenceError as exc:
        return exc.message
    return None


def stub_params(layer: Layer) -> dict[str, Any]:
    """The layer's own ``*_param`` (all its params for a type caffeport does not know) as plain Python data."""
    own = layer_type(layer.type).param
    params = {own: layer.param(own)} if own else dict(layer.params)
    return literal(params)


def quote(text: str) -> str:
    """``text`` as a Python string literal (double quotes, escapes where needed)."""
    return json.dumps(text)


def comment(text: str) -> str:
    """A ``#`` comment line: names holding line breaks cannot end it early."""
    return "# " + " ".join(text.splitlines())


def wrapped(line: str) -> list[str]:
    """``line`` cut to `LINE_LENGTH`: a comment into comment lines, a call at the commas of its first bracket."""
    if len(line) <= LINE_LENGTH:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    if line.lstrip().startswith("#"):
        return textwrap.wrap(line.lstrip()[1:].strip(), LINE_LENGTH - len(indent) - 2, initial_indent=f"{indent}# ",
                             subsequent_indent=f"{indent}# ", break_long_words=False, break_on_hyphens=False)
    open_at = next((i for i, c in enumerate(line) if c in "([{"), -1)
    if open_at < 0:
        return [line]
    pieces, depth, quoted, start = [], 0, "", 0
    for i, c in enumerate(line):
        if quoted:
            quoted = "" if c == quoted and line[i - 1] != "\\" else quoted
        elif c in "\"'":
            quoted = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth >= 1 and i > open_at:
            pieces.append(line[start : i + 1])
            start = i + 1
    pieces.append(line[start:])
    out, current = [], ""
    hang = " " * (open_at + 1)
    for piece in pieces:
        piece = piece if not out and not current else piece.lstrip()
        candidate = f"{current} {piece}" if current else (piece if not out else hang + piece)
        if current and len(candidate) > LINE_LENGTH:
            out.append(current.rstrip())
            candidate = hang + piece
        current = candidate
    out.append(current)
    return out
