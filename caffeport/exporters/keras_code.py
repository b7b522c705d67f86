"""``-f keras-code``: a folder with a standalone Keras 3 ``model.py``, its weights (``weights.h5``) and a README.

A directory format like ``torch-code`` (`caffeport.exporters.torch_code`):
`caffeport.convert` hands the writer an empty temporary directory and
renames it into place once every file is written, so a failed conversion
leaves nothing. The net comes after the torch backend (Caffe layouts, the
BatchNorm scale factor divided out, Scale folded in);
`caffeport.codegen.keras` reorders the weights to channels_last. Stubbed
layers are listed in the convert summary's warnings.
"""

from __future__ import annotations

from pathlib import Path

from caffeport.exporters.code_folder import write_code_folder
from caffeport.exporters.registry import EpsTarget, ExportOptions, register_exporter
from caffeport.ir import Net


@register_exporter("keras-code",
                   eps=EpsTarget(code_file="model.py"),
                   suffix="", default_backend="torch", backends=("torch",), directory=True,
                   description="a folder: standalone Keras 3 model.py + weights.h5 (load_model())")
def write_keras_code(net: Net, path: Path, options: ExportOptions) -> None:
    """Fill the (empty, temporary) directory ``path`` with model.py, weights.h5 and README.md."""
    from caffeport.codegen.keras import WEIGHTS_FILE, generate, readme, write_weights

    model = generate(net)
    write_weights(model, path / WEIGHTS_FILE)
    write_code_folder(net, path, "keras-code", model.source, readme(model), model.stubs)
