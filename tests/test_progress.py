"""Progress reporting: called while streaming, drawn only for a watching terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import caffeport
from caffeport.progress import ProgressBar, wanted
from tests.conftest import models_dir


@pytest.mark.parametrize(("format", "suffix"), [("keras-h5", ".h5"), ("npz", ".npz"), ("safetensors", ".safetensors"),
                                               ("flax", ".msgpack"), ("ir", ".ir.msgpack"), ("caffe", ".caffemodel")])
def test_every_streaming_format_reports_progress_up_to_the_total(tmp_path: Path, format: str, suffix: str) -> None:
    folder = models_dir() / "caffe-reference" / "a_lenet"
    calls: list[tuple[int, int, int, int]] = []
    caffeport.convert(folder / "a_lenet.caffemodel", folder / "deploy.prototxt", tmp_path / f"w{suffix}",
                      format=format, progress=lambda *args: calls.append(args))
    done = [c[0] for c in calls]
    assert done == sorted(done) and calls
    weights = 4 * 431_080  # LeNet's parameter count (meta.json), stored and written as float32
    assert calls[-1] == (weights, weights, 8, 8)  # 4 weighted layers, a weight and a bias each


def test_bar_draws_and_is_off_for_pipes() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar(50, 100, 1, 2)
    bar(100, 100, 2, 2)
    bar.close()
    text = out.getvalue()
    assert "100%" in text and "blob 2/2" in text and text.endswith("\n")
    assert not wanted(1 << 40, quiet=False, stream=io.StringIO())  # not a terminal
    assert not wanted(1 << 40, quiet=True)
