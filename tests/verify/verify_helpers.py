"""What the verify tests share: the CLI in a child process and seeded P-Net inputs saved as .npy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import caffeport

MTCNN = Path(__file__).resolve().parents[2].parent / "shared" / "caffe-models" / "mtcnn"
DET1, DET1_PROTO = MTCNN / "det1.caffemodel", MTCNN / "det1.prototxt"


def verify_cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``caffeport verify ARGS`` as a user runs it, from ``cwd`` (where a ``module:callable`` is looked up), with
    ``env`` added to the environment."""
    return subprocess.run([sys.executable, "-m", "caffeport", "verify", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=900, env={**os.environ, **(env or {})})


def square_input(tmp_path: Path, size: int) -> Path:
    """A seeded (1, 3, size, size) input in [-1, 1], saved for ``--input data=...``."""
    path = tmp_path / f"x{size}.npy"
    np.save(path, np.random.default_rng(size).uniform(-1, 1, (1, 3, size, size)).astype(np.float32))
    return path


def line_of(stdout: str, key: str) -> str:
    """The table row whose Caffe top column is ``key``."""
    return next(line for line in stdout.splitlines() if f" {key} " in f" {line} ")


def save_blobs(caffemodel: Path, prototxt: Path, out: Path) -> None:
    """``<layer>/<index>`` -> blob in an npz: the weights a hand-written model loads."""
    net = caffeport.read(caffemodel, prototxt)
    np.savez(out, **{f"{layer.name}/{i}": np.asarray(blob, np.float32)
                     for layer in net.layers for i, blob in enumerate(layer.blobs)})
