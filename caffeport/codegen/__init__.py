"""Model code generated from a Caffe net: ``-f torch-code`` (PyTorch), ``-f keras-code`` (Keras 3) and
``-f flax-code`` (Flax linen) ``model.py``.

`caffeport.codegen.torch` assembles the file; each layer type's code comes
from its emitter in `caffeport.codegen.emitters` (registered by decorator in
`caffeport.codegen.registry`, as `caffeport.onnx.lowerings` are); the helpers
the generated file carries for Caffe's rules PyTorch lacks are in
`caffeport.codegen.helpers`. `caffeport.codegen.keras` is the Keras 3
generator, `caffeport.codegen.flax` (helpers in `caffeport.codegen.flax_helpers`)
the Flax one; what they share (names, stubs, line wrapping, the sources' sha256)
is `caffeport.codegen.common`. Nothing here imports a framework: the
generated code does, when it runs.
"""

from __future__ import annotations

from caffeport.codegen.torch import GeneratedModel, generate, readme

__all__ = ["GeneratedModel", "generate", "readme"]
