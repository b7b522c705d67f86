"""Running generated ``-f keras-code`` models as a user would: a fresh ``python -I`` that cannot import caffeport.

TensorFlow takes seconds to import, so `run_keras_generated` runs several
folders in one interpreter: each ``model.py`` is imported under its own
module name, ``load_model(return_all=True)`` is called on the NHWC inputs,
and every tensor comes back through an npz transposed to Caffe's NCHW. A
``--backend channels_first`` model (NCHW throughout) runs under Keras'
torch backend (faster here than its JAX one, which compiles every eager op): the
TensorFlow backend convolves channels_first only on a GPU.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

_RUNNER = textwrap.dedent('''
    import importlib.abc
    import importlib.util
    import sys

    class NoCaffeport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "caffeport" or name.startswith("caffeport."):
                raise ImportError(f"the generated model imported {name}")
            return None

    sys.meta_path.insert(0, NoCaffeport())
    import numpy as np

    nhwc = sys.argv[1] == "channels_last"
    for n, (folder, inputs_file, result_file) in enumerate(zip(*[iter(sys.argv[2:])] * 3)):
        spec = importlib.util.spec_from_file_location(f"generated_{n}", f"{folder}/model.py")
        generated = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(generated)
        everything = generated.load_model(return_all=True)
        plain = generated.load_model()
        with np.load(inputs_file) as z:
            order = z["__order__"].tolist()
            inputs = [z[name].transpose(0, 2, 3, 1) if nhwc and z[name].ndim == 4 else z[name] for name in order]
        numpy = generated.keras.ops.convert_to_numpy
        outputs = {k: numpy(v) for k, v in everything(inputs).items()}
        alone = {k: numpy(v) for k, v in plain(inputs).items()}
        for key, value in alone.items():
            assert np.array_equal(value, outputs[key]), key
        nchw = {k: v.transpose(0, 3, 1, 2) if nhwc and v.ndim == 4 else v for k, v in outputs.items()}
        np.savez(result_file, __plain__=np.array(sorted(alone)), **nchw)
    assert not [m for m in sys.modules if m == "caffeport" or m.startswith("caffeport.")]
''')


#: the Keras backend each data format's models run under here
KERAS_BACKENDS = {"channels_last": "tensorflow", "channels_first": "torch"}


def run_keras_generated(runs: list[tuple[Path, dict[str, np.ndarray], list[str]]], timeout: float = 900,
                        data_format: str = "channels_last") -> list[tuple[dict[str, np.ndarray], list[str]]]:
    """Per (folder, NCHW inputs, input order): every tensor ``load_model(return_all=True)`` gives (NCHW) and the
    keys of the plain model's outputs. ``data_format``: the one the models were generated for."""
    args: list[str] = [data_format]
    for folder, inputs, order in runs:
        inputs_file = folder.parent / f"{folder.name}-inputs.npz"
        np.savez(inputs_file, __order__=np.array(order), **inputs)
        args += [str(folder), str(inputs_file), str(folder.parent / f"{folder.name}-result.npz")]
    done = subprocess.run([sys.executable, "-I", "-c", _RUNNER, *args], capture_output=True, text=True,
                          timeout=timeout,
                          env={"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": KERAS_BACKENDS[data_format]})
    assert done.returncode == 0, done.stderr[-4000:]
    results = []
    for folder, _, _ in runs:
        with np.load(folder.parent / f"{folder.name}-result.npz") as z:
            results.append(({k: z[k] for k in z.files if k != "__plain__"}, z["__plain__"].tolist()))
    return results
