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
from caffeport.layers.layout import Options
from caffeport.readers.files import model_file, naming_file

Pass = Callable[[Net, Options], None]


@dataclass(frozen=True)
class PassFacts:
    """What a pass needs done before it and what it establishes, as named facts about the net.

    E.g. ``keras_layout`` requires ``data_format`` (the PReLU alpha's shape
    depends on it) and provides ``keras_layout``, which ``flatten_channels_last``
    requires. `register_backend` refuses an order in which a pass runs before
    what it requires.
    """

    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()


PASSES: dict[str, Pass] = {}
FACTS: dict[str, PassFacts] = {}
BACKENDS: dict[str, list[str]] = {}


def register_pass(
    name: str, *, requires: Sequence[str] = (), provides: Sequence[str] = ()
) -> Callable[[Pass], Pass]:
    """Decorator: make a pass available to backends under ``name``, with the facts it requires and provides."""

    def register(func: Pass) -> Pass:
        if name in PASSES:
            raise ValueError(f"a pass named {name!r} is already registered")
        PASSES[name] = func
        FACTS[name] = PassFacts(tuple(requires), tuple(provides))
        return func

    return register


def check_order(name: str, passes: Sequence[str]) -> None:
    """Raise `ValueError` when a pass of backend ``name`` requires a fact no earlier pass provides."""
    established: set[str] = set()
    for index, pass_name in enumerate(passes):
        facts = FACTS.get(pass_name, PassFacts())
        missing = [fact for fact in facts.requires if fact not in established]
        if missing:
            providers = sorted({p for p, f in FACTS.items() for fact in missing if fact in f.provides})
            raise ValueError(
                f"backend {name!r}: pass {pass_name!r} (position {index + 1}) requires {', '.join(missing)}, which "
                f"no earlier pass provides" + (f" (put one of {', '.join(providers)} before it)" if providers else "")
            )
        established.update(facts.provides)


def check_passes(name: str, passes: Sequence[str]) -> None:
    """Raise `ValueError` when backend ``name``'s ``passes`` name an unregistered pass or run in a wrong order."""
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"backend {name!r} names unregistered passes: {', '.join(unknown)}")
    check_order(name, passes)


def register_backend(name: str, passes: Sequence[str], *, replace: bool = False) -> None:
    """Define backend ``name`` as the passes ``passes``, run in that order (checked against their facts)."""
    check_passes(name, passes)
    if name in BACKENDS and not replace:
        raise ValueError(f"backend {name!r} already exists (pass replace=True to redefine it)")
    BACKENDS[name] = list(passes)


def transform(net: Net, backend: str = "tensorflow", options: Options | None = None,
              passes: Sequence[str] | None = None) -> Net:
    """A new net with ``backend``'s passes applied; ``net`` itself is left as it was.

    ``passes``: the passes to run under the name ``backend`` instead of its `BACKENDS` entry (a format that
    defines what a backend name means for it, `caffeport.exporters.registry.Exporter.passes`).
    """
    if passes is None and backend not in BACKENDS:
        raise CaffeportError(f"unknown backend {backend!r}; choose one of: {', '.join(sorted(BACKENDS))}")
    options = options or Options()
    if options.depthwise not in ("depthwise", "grouped"):
        raise CaffeportError(f"depthwise must be 'depthwise' or 'grouped', not {options.depthwise!r}")
    with naming_file(model_file(net)):  # a pass's complaint names the layer; the one line must name the file too
        check_net(net)  # weights that do not fit their layers are refused, as Caffe refuses them
        result = _copy_structure(net)
        result.conversion.backend = backend
        for name in [*_option_passes(options), *(BACKENDS[backend] if passes is None else passes)]:
            PASSES[name](result, options)
    return result


def _option_passes(options: Options) -> list[str]:
    """Passes an option runs before the backend's own: ``matlab`` rewrites the Caffe-layout net every backend reads."""
    return ["matlab_row_major"] if options.matlab else []


def _copy_structure(net: Net) -> Net:
    """Copy everything but the blob arrays (passes replace arrays, they never write into them)."""
    blobs = {id(layer): layer.blobs for layer in net.layers}
    memo = {id(b): b for layer in net.layers for b in layer.blobs}
    result = copy.deepcopy(net, memo)
    for original, new in zip(net.layers, result.layers):
        new.blobs = list(blobs[id(original)])
    return result
