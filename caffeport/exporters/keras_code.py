"""``-f keras-code``: a folder with a standalone Keras 3 ``model.py``, its weights (``weights.h5``) and a README.

A directory format like ``torch-code`` (`caffeport.exporters.torch_code`):
`caffeport.convert` hands the writer an empty temporary directory and
renames it into place once every file is written, so a failed conversion
leaves nothing. Stubbed layers are listed in the convert summary's warnings.

Backends: the generator reads Caffe's layouts (the torch passes: the BatchNorm
scale factor divided out, Scale folded in) and lays the weights out for Keras
itself, so this format defines its two backends' passes (`Exporter.passes`):
``tensorflow`` (the default) holds 4-D tops channels_last, as Keras does by
default; ``channels_first`` holds them NCHW, as Caffe does (Keras' TensorFlow
backend convolves those only on a GPU; its JAX and torch backends run them
anywhere). The data-format pass records which in ``net.conversion``, where
`caffeport.codegen.keras` reads it.
"""

from __future__ import annotations

from pathlib import Path

from caffeport.exporters.code_folder import write_code_folder
from caffeport.exporters.registry import EpsTarget, ExportOptions, register_exporter
from caffeport.ir import Net
from caffeport.transforms import BACKENDS

#: the backend names keras-code takes, and what each runs: Caffe's layouts kept, the data format recorded
PASSES = {"tensorflow": (*BACKENDS["torch"], "channels_last"),
          "channels_first": (*BACKENDS["torch"], "channels_first")}


@register_exporter("keras-code",
                   eps=EpsTarget(code_file="model.py"),
                   suffix="", default_backend="tensorflow", backends=tuple(PASSES), passes=PASSES, directory=True,
                   description="a folder: standalone Keras 3 model.py + weights.h5 (load_model()); NHWC, or NCHW "
                               "with --backend channels_first")
def write_keras_code(net: Net, path: Path, options: ExportOptions) -> None:
    """Fill the (empty, temporary) directory ``path`` with model.py, weights.h5 and README.md."""
    from caffeport.codegen.keras import WEIGHTS_FILE, generate, readme, write_weights

    model = generate(net)
    write_weights(model, path / WEIGHTS_FILE)
    write_code_folder(net, path, "keras-code", model.source, readme(model), model.stubs)
