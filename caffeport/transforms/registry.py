"""Passes and backends: a backend is a named list of passes over the IR.

A pass is a pure function ``(net, options) -> None`` that edits a *copy* of the
net made by `transform` (layers may be replaced or dropped, blob arrays are
replaced, never written into: the originals are read-only views of the
model file). Each pass does one job and says what it did in ``net.report``.

Users add a backend with `register_backend`, listing existing passes by name
and their own ones registered with `register_pass`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from caffeport.errors import CaffeportError
from caffeport.ir import Net
from caffeport.layers.blobs import check_net


@dataclass(frozen=True)
class Options:
    """Choices a user can make about a conversion, the same for every backend."""

    #: "depthwise": depthwise convolutions become DepthwiseConv2D kernels (kh, kw, C, multiplier);
    #: "grouped": they keep the grouped Conv2D layout (kh, kw, 1, out)
    depthwise: str = "depthwise"
    #: drop layers of unknown types that carry blobs instead of passing their blobs through
    skip_unknown: bool = False


Pass = Callable[[Net, Options], None]

PASSES: dict[str, Pass] = {}
BACKENDS: dict[str, list[str]] = {}


def register_pass(name: str) -> Callable[[Pass], Pass]:
    """Decorator: make a pass available to backends under ``name``."""

    def register(func: Pass) -> Pass:
        if name in PASSES:
            raise ValueError(f"a pass named {name!r} is already registered")
        PASSES[name] = func
        return func

    return register


def register_backend(name: str, passes: Sequence[str], *, replace: bool = False) -> None:
    """Define backend ``name`` as the passes ``passes``, run in that order."""
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"backend {name!r} names unregistered passes: {', '.join(unknown)}")
    if name in BACKENDS and not replace:
        raise ValueError(f"backend {name!r} already exists (pass replace=True to redefine it)")
    BACKENDS[name] = list(passes)


def transform(net: Net, backend: str = "tensorflow", options: Options | None = None) -> Net:
    """A new net with ``backend``'s passes applied; ``net`` itself is left as it was."""
    if backend not in BACKENDS:
        raise CaffeportError(f"unknown backend {backend!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    options = options or Options()
    if options.depthwise not in ("depthwise", "grouped"):
        raise CaffeportError(f"depthwise must be 'depthwise' or 'grouped', not {options.depthwise!r}")
    check_net(net)  # weights that do not fit their layers are refused, as Caffe refuses them
    result = _copy_structure(net)
    result.metadata["backend"] = backend
    for name in BACKENDS[backend]:
        PASSES[name](result, options)
    return result


def _copy_structure(net: Net) -> Net:
    """Copy everything but the blob arrays (passes replace arrays, they never write into them)."""
    blobs = {id(layer): layer.blobs for layer in net.layers}
    memo = {id(b): b for layer in net.layers for b in layer.blobs}
    result = copy.deepcopy(net, memo)
    for original, new in zip(net.layers, result.layers):
        new.blobs = list(blobs[id(original)])
    return result
