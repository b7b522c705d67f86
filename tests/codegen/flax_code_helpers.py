"""Running generated ``-f flax-code`` models as a user would: a fresh ``python -I`` that cannot import caffeport.

JAX takes seconds to import and compiles each model, so `run_flax_generated`
runs several folders in one interpreter and compiles each model once: every
``model.py`` is imported under its own module name, ``load_model()`` gives
(module, variables), ``module.apply(variables, *inputs, return_all=True)`` runs
under one ``jax.jit`` on the NHWC inputs, and the plain call (the outputs
only) is traced with ``jax.eval_shape`` (no second compilation) to check that
its keys are the net's outputs with the same shapes. A model whose jit raises
the generated DetectionOutput's TypeError (numpy on concrete values) runs
without jit, both calls. Every tensor comes back
through an npz, 4-D ones transposed back to Caffe's NCHW.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

#: JAX on the CPU only (no probing for accelerators)
_ENV = {"JAX_PLATFORMS": "cpu"}
_RUNNER = textwrap.dedent('''
    import importlib.abc
    import importlib.util
    import os
    import sys

    class NoCaffeport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "caffeport" or name.startswith("caffeport."):
                raise ImportError(f"the generated model imported {name}")
            return None

    sys.meta_path.insert(0, NoCaffeport())
    import jax
    import numpy as np

    jit_only = os.environ.get("JIT_ONLY") == "1"
    for n, (folder, inputs_file, result_file, patch) in enumerate(zip(*[iter(sys.argv[1:])] * 4)):
        spec = importlib.util.spec_from_file_location(f"generated_{n}", f"{folder}/model.py")
        generated = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = generated  # flax modules are dataclasses: their module must be importable
        spec.loader.exec_module(generated)
        if patch:
            exec(patch, vars(generated))
        module, variables = generated.load_model()
        with np.load(inputs_file) as z:
            order = z["__order__"].tolist()
            inputs = [z[name].transpose(0, 2, 3, 1) if z[name].ndim == 4 else z[name] for name in order]
        try:
            everything = jax.jit(lambda v, *x: module.apply(v, *x, return_all=True))(variables, *inputs)
            plain = jax.eval_shape(lambda v, *x: module.apply(v, *x), variables, *inputs)
        except TypeError as error:  # a DetectionOutput: numpy on concrete values, so without jit
            if jit_only or not isinstance(error.__cause__, jax.errors.TracerArrayConversionError):
                raise
            everything = module.apply(variables, *inputs, return_all=True)
            plain = module.apply(variables, *inputs)
        outputs = {k: np.asarray(v) for k, v in everything.items()}
        for key, value in plain.items():
            assert value.shape == outputs[key].shape, key
        nchw = {k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for k, v in outputs.items()}
        np.savez(result_file, __plain__=np.array(sorted(plain)), **nchw)
    assert not [m for m in sys.modules if m == "caffeport" or m.startswith("caffeport.")]
''')


def run_flax_generated(runs: list[tuple[Path, dict[str, np.ndarray], list[str]]], patch: str = ""
                       ) -> list[tuple[dict[str, np.ndarray], list[str]]]:
    """Per (folder, NCHW inputs, input order): every tensor ``return_all=True`` gives (4-D ones NCHW) and the keys of
    the plain call's outputs. ``patch`` is run in each model module's namespace before it is loaded."""
    args: list[str] = []
    for folder, inputs, order in runs:
        inputs_file = folder.parent / f"{folder.name}-inputs.npz"
        np.savez(inputs_file, __order__=np.array(order), **inputs)
        args += [str(folder), str(inputs_file), str(folder.parent / f"{folder.name}-result.npz"), patch]
    done = subprocess.run([sys.executable, "-I", "-c", _RUNNER, *args], capture_output=True, text=True, env=_ENV)
    assert done.returncode == 0, done.stderr[-4000:]
    results = []
    for folder, _, _ in runs:
        with np.load(folder.parent / f"{folder.name}-result.npz") as z:
            results.append(({k: z[k] for k in z.files if k != "__plain__"}, z["__plain__"].tolist()))
    return results


def run_flax_failure(folder: Path, inputs: dict[str, np.ndarray], order: list[str], jit_only: bool = False) -> str:
    """The stderr of a generated model's call that is expected to fail (``jit_only``: no retry without jit)."""
    inputs_file = folder.parent / f"{folder.name}-inputs.npz"
    np.savez(inputs_file, __order__=np.array(order), **inputs)
    env = {**_ENV, "JIT_ONLY": "1" if jit_only else "0"}
    done = subprocess.run([sys.executable, "-I", "-c", _RUNNER, str(folder), str(inputs_file),
                           str(folder.parent / "unused.npz"), ""], capture_output=True, text=True, env=env)
    assert done.returncode != 0
    return done.stderr
