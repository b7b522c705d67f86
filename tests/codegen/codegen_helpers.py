"""Running a generated ``-f torch-code`` model the way a user would: in a fresh interpreter without caffeport.

`run_generated` starts ``python -I`` (no PYTHONPATH, no user site, not the
working directory on ``sys.path``) in the output folder, with an import hook
that refuses any ``caffeport`` module, imports ``model.py`` from the folder,
calls ``load_model()`` and ``model(*inputs, return_all=True)``, and asserts
that no caffeport module was loaded. The tensors come back through an npz.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

_RUNNER = textwrap.dedent('''
    import importlib.abc
    import sys

    class NoCaffeport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "caffeport" or name.startswith("caffeport."):
                raise ImportError(f"the generated model imported {name}")
            return None

    sys.meta_path.insert(0, NoCaffeport())
    folder, inputs_file, result_file, patch = sys.argv[1:5]
    sys.path.insert(0, folder)
    import numpy as np
    import torch

    import model as generated

    net = generated.load_model()
    with np.load(inputs_file) as z:
        inputs = [torch.from_numpy(z[name]) for name in z["__order__"].tolist()]
    if patch:
        exec(patch, {"net": net, "torch": torch, "np": np})
    with torch.no_grad():
        outputs = net(*inputs, return_all=True)
        plain = net(*inputs)
    assert set(plain) <= set(outputs), (sorted(plain), sorted(outputs))
    for key, value in plain.items():
        assert torch.equal(value, outputs[key]), key
    assert not [m for m in sys.modules if m == "caffeport" or m.startswith("caffeport.")]
    np.savez(result_file, __plain__=np.array(sorted(plain)), **{k: v.numpy() for k, v in outputs.items()})
''')


def ruff_check(path: Path) -> None:
    """``ruff check`` of a generated file with ruff's defaults and with this project's own rules (line length 120)."""
    ruff = Path(sys.executable).with_name("ruff")
    for extra in ([], ["--config", str(ROOT / "pyproject.toml")]):
        done = subprocess.run([str(ruff), "check", "--no-cache", *extra, str(path)], capture_output=True, text=True,
                              cwd=path.parent)
        assert done.returncode == 0, done.stdout + done.stderr


def run_generated(folder: Path, inputs: dict[str, np.ndarray], order: list[str], patch: str = "",
                  timeout: float = 600) -> tuple[dict[str, np.ndarray], list[str]]:
    """All tensors ``model(*inputs, return_all=True)`` gives, and the keys of the plain call (the outputs)."""
    inputs_file = folder.parent / f"{folder.name}-inputs.npz"
    result_file = folder.parent / f"{folder.name}-result.npz"
    np.savez(inputs_file, __order__=np.array(order), **inputs)
    done = subprocess.run([sys.executable, "-I", "-c", _RUNNER, str(folder), str(inputs_file), str(result_file),
                           patch], capture_output=True, text=True, cwd=folder, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(result_file) as z:
        got = {k: z[k] for k in z.files if k != "__plain__"}
        plain = z["__plain__"].tolist()
    return got, plain


def run_generated_failure(folder: Path, inputs: dict[str, np.ndarray], order: list[str]) -> str:
    """The stderr of a generated model's forward that is expected to fail."""
    inputs_file = folder.parent / f"{folder.name}-inputs.npz"
    np.savez(inputs_file, __order__=np.array(order), **inputs)
    done = subprocess.run([sys.executable, "-I", "-c", _RUNNER, str(folder), str(inputs_file),
                           str(folder.parent / "unused.npz"), ""], capture_output=True, text=True, cwd=folder,
                          timeout=600)
    assert done.returncode != 0
    return done.stderr

