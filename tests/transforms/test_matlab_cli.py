"""``verify --matlab`` and a mean image under ``run --matlab``: the command line around the MATLAB rewrite.

A model converted with ``--matlab`` takes row-major images, so its reference
is the rewritten net (``run --matlab``), not the stored one: ``verify
--matlab`` compares with that and passes, and plain ``verify`` of the same
model fails (the stored kernels read the image transposed). A mean image is
stored as the net saw images (transposed), so under ``--matlab`` it is
transposed before it is subtracted from the row-major image: the rewritten net
on ``image - mean.T`` is the stored net on ``image.T - mean``, what MATLAB fed it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import caffeport
from caffeport.readers.preprocess import image_input
from tests.conftest import models_dir
from tests.protowriter import blob

IMAGE = Path(__file__).resolve().parents[2].parent / "shared" / "images" / "astronaut.png"


def _det2() -> tuple[Path, Path]:
    folder = models_dir() / "mtcnn"
    return folder / "det2.caffemodel", folder / "det2.prototxt"


def _cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_verify_matlab_compares_with_the_rewritten_net(tmp_path: Path) -> None:
    caffemodel, prototxt = _det2()
    out = tmp_path / "rnet"
    caffeport.convert(caffemodel, prototxt, out, format="torch-code", matlab=True)
    assert "row-major images" in (out / "model.py").read_text()
    assert "--matlab" in (out / "README.md").read_text()
    image = ("--image", IMAGE, "--swap-rb", "--mean", "127.5,127.5,127.5", "--scale", "0.0078125")
    good = _cli("verify", caffemodel, "-p", prototxt, "--torch", out, *image, "--matlab", "--all-layers", cwd=tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "FAIL" not in good.stdout
    plain = _cli("verify", caffemodel, "-p", prototxt, "--torch", out, *image, "--all-layers", cwd=tmp_path)
    assert plain.returncode == 1, plain.stdout + plain.stderr
    assert "first divergence: layer conv1 (type Convolution)" in plain.stdout


def test_generated_keras_code_says_it_takes_row_major_images(tmp_path: Path) -> None:
    caffemodel, prototxt = _det2()
    caffeport.convert(caffemodel, prototxt, tmp_path / "matlab", format="keras-code", matlab=True)
    caffeport.convert(caffemodel, prototxt, tmp_path / "plain", format="keras-code")
    assert "row-major images" in (tmp_path / "matlab" / "model.py").read_text()
    assert "--matlab" in (tmp_path / "matlab" / "README.md").read_text()
    assert "--matlab" not in (tmp_path / "plain" / "model.py").read_text()


def test_a_mean_image_is_transposed_under_run_matlab(tmp_path: Path) -> None:
    caffemodel, prototxt = _det2()
    mean = np.random.default_rng(0).uniform(0, 255, (1, 3, 24, 24)).astype(np.float32)  # not symmetric
    (tmp_path / "mean.binaryproto").write_bytes(blob(mean))
    result = _cli("run", caffemodel, "-p", prototxt, "--matlab", "--image", IMAGE, "--mean",
                  tmp_path / "mean.binaryproto", "--scale", "0.0078125", "-o", tmp_path / "got.npz", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    raw = image_input(IMAGE, (1, 3, 24, 24))  # BGR, not yet shifted
    stored = caffeport.read(caffemodel, prototxt)
    want = caffeport.run(stored, {"data": (raw.swapaxes(2, 3) - mean) * np.float32(0.0078125)})
    with np.load(tmp_path / "got.npz") as got:
        for top, value in want.items():
            np.testing.assert_allclose(got[top], value, rtol=1e-4, atol=1e-5 * float(np.abs(value).max()))
