"""What ``--torch SPEC`` and ``--flax SPEC`` name: a model folder, a Python file or a module, and a callable in it.

``DIR`` (its ``model.py``, the callable ``load_model``: what ``-f torch-code``
and ``-f flax-code`` write), ``FILE.py:callable``, ``DIR:callable`` or
``package.module:callable`` (imported through ``sys.path``). A file is imported
under a private name with its folder first on ``sys.path`` only while it runs
and its callable is called (it may import its neighbours); nothing is left in
``sys.path`` or ``sys.modules``. Every failure of the user's code is one
`CaffeportError` line naming the flag and the spec, the cause chained.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from caffeport.errors import CaffeportError

#: what ``DIR`` or ``FILE.py`` alone calls: the generated model.py's loader
DEFAULT_CALLABLE = "load_model"


def spec_error(flag: str, spec: str, message: str) -> CaffeportError:
    return CaffeportError(f"{flag} {spec!r}: {message}")


@contextlib.contextmanager
def _on_path(folder: Path | None) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while the model file runs, then removed (nothing for a module spec)."""
    if folder is None:
        yield
        return
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _split(spec: str) -> tuple[str, str]:
    """(file, folder or module; callable): ``x:name`` splits at the last colon when a dotted name follows it."""
    target, sep, attr = spec.rpartition(":")
    if sep and target and all(part.isidentifier() for part in attr.split(".")):
        return target, attr
    return spec, ""


def _import_file(flag: str, spec: str, path: Path) -> Any:
    name = f"_caffeport_verify_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}"
    file_spec = importlib.util.spec_from_file_location(name, path)
    if file_spec is None or file_spec.loader is None:
        raise spec_error(flag, spec, "cannot import it as a Python file")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[name] = module  # while it runs: dataclasses (flax modules too) look their module up
    try:
        file_spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def load_target(flag: str, spec: str, done: Callable[[Any], bool]) -> Any:
    """The object ``spec`` names; called with no arguments (inside the import's ``sys.path``) unless ``done(obj)``."""
    target, attr = _split(spec)
    path = Path(target)
    folder: Path | None = None
    if path.is_dir():
        path = path / "model.py"
        if not path.is_file():
            raise spec_error(flag, spec, "the folder has no model.py (give FILE.py:callable or module:callable)")
    if path.suffix == ".py" or path.is_file():
        if not path.is_file():
            raise spec_error(flag, spec, "no such file")
        folder = path.resolve().parent
        attr = attr or DEFAULT_CALLABLE
    elif not attr:
        raise spec_error(flag, spec, "give a folder holding model.py, FILE.py:callable or package.module:callable")
    with _on_path(folder):
        try:
            module = _import_file(flag, spec, path) if folder else importlib.import_module(target)
        except CaffeportError:
            raise
        except ImportError as exc:
            raise spec_error(flag, spec, f"cannot import it ({exc})") from exc
        except Exception as exc:  # the user's module failed while being imported
            raise spec_error(flag, spec, f"importing it failed: {type(exc).__name__}: {exc}") from exc
        obj = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise spec_error(flag, spec, f"{getattr(obj, '__name__', 'the module')!r} has no callable {part!r}")
            obj = getattr(obj, part)
        if done(obj):
            return obj
        if not callable(obj):
            raise spec_error(flag, spec, f"{attr} is a {type(obj).__name__}, not a callable")
        try:
            return obj()
        except Exception as exc:  # the user's builder failed: one line, the cause chained
            raise spec_error(flag, spec, f"calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
