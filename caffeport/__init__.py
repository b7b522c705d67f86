"""caffeport: read trained Caffe models without Caffe and export their weights.

The public API is small:

- `read(caffemodel=None, prototxt=None)` -> `Net`
- `read_blob(path)` -> numpy array (``.binaryproto`` mean files)
- `Net`, `Layer`: the intermediate representation (`caffeport.ir`)
- `CaffeportError` and its subclasses (`caffeport.errors`) for bad input
"""

from caffeport.errors import CaffeportError
from caffeport.ir import Layer, MatchReport, Net
from caffeport.readers import read, read_blob

__version__ = "0.1.0"

__all__ = ["CaffeportError", "Layer", "MatchReport", "Net", "__version__", "read", "read_blob"]
