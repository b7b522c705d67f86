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

Layers. The package is built in layers, lowest first. A module imports
modules of its own layer or of a layer below it, never above, and no modules
import each other in a cycle: not through a function-local import, nor a
``TYPE_CHECKING`` block, nor the package ``__init__.py`` an import runs
(importing ``caffeport.readers.files`` runs ``caffeport/readers/__init__.py``,
which imports every reader). Why: a low layer that imports a high one needs
the whole package to load and to test, and a cycle becomes an import-order
failure in somebody's program. ``tests/test_layering.py`` enforces this from
the source with its own table; a new module is placed there and here.

0. base: ``errors``, and this package's own body (``__version__`` and the
   lazy names above; loading it imports no caffeport module)
1. codec: ``codec``, the protobuf wire format in both directions and Caffe's
   schema tables: ``codec.wire``, ``codec.caffe_schema``, ``codec.messages``
2. file access: ``io``: memory maps of model files, the file behind each
   map and preads from it (``io.mapped``), all-or-nothing output files
   (``io.output``)
3. IR: ``ir`` (`Net`, `Layer`, the lazy blob ``Reshaped``) and ``ir.file``
   (the IR file's writer and reader)
4. streaming: ``streaming``: ``streaming.blocks`` (chunks, placement, the
   writer loop and its threads) and ``streaming.tiled_transpose`` (strip
   transpose, pread gather)
5. layer types: ``layers`` (each type's shape rule, forward and weight
   layout; ``layers.shapes``, the walk that infers a net's shapes with them)
6. readers: ``readers`` (file checks and sniffing in ``readers.files``,
   blobs, the caffemodel, prototxt and HDF5 readers and what they share in
   ``readers.net_common`` and ``readers.v0_layers``; no format reader
   imports another; ``readers.preprocess``, an image as a net input)
7. reference forward: ``forward`` (`run`, Caffe's semantics in numpy)
8. transforms: ``transforms`` (backend layouts and passes over a `Net`)
9. exporters: ``exporters`` and what they build on: ``onnx``, ``codegen``,
   ``verify`` and ``keras_model`` (converted weights into a Keras model)
10. application: ``conversion`` (`convert`), ``compat``, ``describe``,
    ``progress``, ``cli`` and ``__main__``

Each layer below the reference forward is a package of its own, so a module
loads only what is below it: the writers that encode with the codec (the
``caffe`` exporter, the ONNX writer) load no reader. The top level holds the
public names, the errors, the reference forward and the application.
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
    "load_ir": "caffeport.ir.file",
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
    from caffeport.ir.file import load_ir
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
