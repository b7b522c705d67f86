"""ONNX (``-f onnx``): the whole net as an ONNX graph of standard ops, weights as initializers.

Not a weights file like the other formats: every layer is lowered to ONNX
(`caffeport.onnx`), tensors named after the Caffe tops (the map to ``caffeport
run --all-layers`` keys in the model's ``caffeport.tensors`` metadata), and
``caffeport verify`` compares the result with the reference forward. Default
backend ``caffe``: the lowerings read Caffe's own blobs and layouts (a
backend that rewrites them for Keras or PyTorch is refused). Needs the
``onnx`` package (``pip install 'caffeport[onnx]'``), imported only here.

``ExportOptions.opset`` (default `caffeport.onnx.export.DEFAULT_OPSET`),
``ExportOptions.dynamic_batch`` (a symbolic batch axis) and ``ExportOptions.ssd_heads`` (stop before SSD's
DetectionOutput: its loc, conf and priors bottoms are the outputs) are this format's options.

The weights are streamed from the caffemodel's memory map into the file
(`caffeport.onnx.stream`), so memory stays bounded at any model size. Above
2 GiB, or with ``ExportOptions.external_data`` (``--external-data``), the
weights go to ONNX external data ``<output name>.data`` beside the model:
both files are published, or neither (the data file is removed again when the
model file cannot be renamed into place: `ExportOptions.companions`).
"""

from __future__ import annotations

from pathlib import Path

from caffeport.exporters.registry import ExportOptions, register_exporter
from caffeport.ir import Net


@register_exporter("onnx", suffix=".onnx", default_backend="caffe", backends=("caffe",),
                   options=("opset", "dynamic_batch", "ssd_heads", "external_data", "preprocessing"),
                   description="ONNX model (graph and weights, standard ops, opset 17); check it with caffeport verify")
def write_onnx_file(net: Net, path: Path, options: ExportOptions) -> None:
    """Lower ``net`` to ONNX and write it to ``path`` (a temporary file `convert` renames into place)."""
    from caffeport.onnx.export import DEFAULT_OPSET, write_onnx

    data = write_onnx(net, path, opset=options.opset or DEFAULT_OPSET, dynamic_batch=options.dynamic_batch,
                      ssd_heads=options.ssd_heads, external_data=options.external_data,
                      final_path=options.output or path, force=options.force, progress=options.progress,
                      preprocessing=options.preprocessing)
    if data is not None:
        options.companions.append(data)
