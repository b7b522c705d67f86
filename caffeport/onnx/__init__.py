"""ONNX export of a Caffe `Net` (``caffeport convert -f onnx``) and its check against the reference (``verify``).

Each Caffe layer type has its lowering in one module of
`caffeport.onnx.lowerings` (registered by decorator, as the layer types
themselves are in `caffeport.layers`); `caffeport.onnx.graph` is the small
graph builder they share, `caffeport.onnx.export` walks the net and
`caffeport.onnx.verify` runs the exported model with onnxruntime beside
`caffeport.run`.

The ``onnx`` package (and ``onnxruntime`` for ``verify``) is the optional
extra ``caffeport[onnx]``. ``write_onnx`` (``convert -f onnx``) never
imports it: the graph is caffeport's own records (`caffeport.onnx.proto`),
and onnx's checker runs in a child process beside the writing
(`caffeport.onnx.stream.Check`); ``to_onnx`` and ``verify`` import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caffeport.onnx.export import DEFAULT_OPSET, to_onnx, write_onnx

__all__ = ["DEFAULT_OPSET", "to_onnx", "write_onnx"]


def __getattr__(name: str) -> Any:
    """The export functions, imported on first use."""
    if name in __all__:
        from caffeport.onnx import export

        return getattr(export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
