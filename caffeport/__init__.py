"""caffeport: read trained Caffe models without Caffe and export their weights.

The public API is small:

- `read(caffemodel=None, prototxt=None)` -> `Net`
- `read_blob(path)` -> numpy array (``.binaryproto`` mean files)
- `convert(caffemodel, prototxt, output, format=..., backend=...)` -> `ConvertResult`
- `transform(net, backend)` -> a new `Net` with weights in the backend's layout
- `load_ir(path)` -> the `Net` stored in a ``-f ir`` file
- `Net`, `Layer`: the intermediate representation (`caffeport.ir`)
- `CaffeportError` and its subclasses (`caffeport.errors`) for bad input
"""

from caffeport.convert import ConvertResult, convert
from caffeport.errors import CaffeportError
from caffeport.ir import Layer, MatchReport, Net
from caffeport.ir_file import load_ir
from caffeport.readers import read, read_blob
from caffeport.transforms import register_backend, register_pass, transform

__version__ = "0.1.0"

__all__ = [
    "CaffeportError", "ConvertResult", "Layer", "MatchReport", "Net", "__version__", "convert", "load_ir", "read",
    "read_blob", "register_backend", "register_pass", "transform",
]
