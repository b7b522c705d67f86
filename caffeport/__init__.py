"""caffeport: read trained Caffe models without Caffe and export their weights.

The public API is small:

- `read(caffemodel=None, prototxt=None)` -> `Net`
- `read_blob(path)` -> numpy array (``.binaryproto`` mean files)
- `convert(caffemodel, prototxt, output, format=..., backend=...)` -> `ConvertResult`
- `transform(net, backend)` -> a new `Net` with weights in the backend's layout
- `run(net, inputs, all_layers=False)` -> the net's outputs computed in Caffe's semantics (numpy)
- `load_ir(path)` -> the `Net` stored in a ``-f ir`` file
- `Net`, `Layer`: the intermediate representation (`caffeport.ir`)
- `CaffeportError` and its subclasses (`caffeport.errors`) for bad input

Each name is imported from its module on first use, so ``import caffeport``
costs nothing until then, and the command line (`caffeport.cli`) can set up
the process before numpy loads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "CaffeportError": "caffeport.errors",
    "ConvertResult": "caffeport.conversion",
    "convert": "caffeport.conversion",
    "Layer": "caffeport.ir",
    "MatchReport": "caffeport.ir",
    "Net": "caffeport.ir",
    "load_ir": "caffeport.ir_file",
    "read": "caffeport.readers",
    "read_blob": "caffeport.readers",
    "register_backend": "caffeport.transforms",
    "register_pass": "caffeport.transforms",
    "run": "caffeport.forward",
    "transform": "caffeport.transforms",
}

__all__ = [
    "CaffeportError", "ConvertResult", "Layer", "MatchReport", "Net", "__version__", "convert", "load_ir", "read",
    "read_blob", "register_backend", "register_pass", "run", "transform",
]

if TYPE_CHECKING:
    from caffeport.conversion import ConvertResult, convert
    from caffeport.errors import CaffeportError
    from caffeport.forward import run
    from caffeport.ir import Layer, MatchReport, Net
    from caffeport.ir_file import load_ir
    from caffeport.readers import read, read_blob
    from caffeport.transforms import register_backend, register_pass, transform


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'caffeport' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
