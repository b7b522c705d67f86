"""``caffeport run`` and `caffeport.run`: inputs, outputs, pre-flight and errors, on the shipped PNet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import InputError, UnsupportedModelError
from caffeport.forward import net_outputs
from tests.conftest import models_dir

ROOT = Path(__file__).resolve().parents[1]
PNET = ROOT / "examples" / "mtcnn" / "det1.caffemodel"
PNET_PROTO = ROOT / "examples" / "mtcnn" / "det1.prototxt"
PHOTO = models_dir().parent / "images" / "astronaut.png"


def _cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def test_run_pnet_on_an_input_file_writes_the_outputs(tmp_path: Path) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = _cli("run", PNET, "-p", PNET_PROTO, "--input", f"data={tmp_path / 'x.npy'}", "-o", tmp_path / "o.npz")
    assert result.returncode == 0, result.stderr
    net = caffeport.read(PNET, PNET_PROTO)
    with np.load(tmp_path / "o.npz") as saved:
        assert sorted(saved.files) == sorted(net_outputs(net)) == ["conv4-2", "prob1"]
        expected = caffeport.run(net, {"data": x})
        for key in saved.files:  # another process: BLAS may sum in another order (threads), hence not bit-equal
            np.testing.assert_allclose(saved[key], expected[key], rtol=1e-5, atol=1e-6)
        probabilities = saved["prob1"]
    assert probabilities.shape == (1, 2, 1, 1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)  # a softmax over the two classes
    assert "prob1: 1x2x1x1" in result.stdout


def test_all_layers_keys_every_top_after_its_layer(tmp_path: Path) -> None:
    """In-place layers (PReLU on conv1) are captured right after they ran: conv1/conv1 differs from PReLU1/conv1."""
    result = _cli("run", PNET, "-p", PNET_PROTO, "--random", "7", "--all-layers", "-o", tmp_path / "o.npz")
    assert result.returncode == 0, result.stderr
    with np.load(tmp_path / "o.npz") as saved:
        before, after = saved["conv1/conv1"], saved["PReLU1/conv1"]
        assert "pool1/pool1" in saved.files and "prob1" in saved.files
    slope = np.asarray(caffeport.read(PNET, PNET_PROTO).layer("PReLU1").blobs[0]).reshape(1, -1, 1, 1)
    np.testing.assert_allclose(after, np.where(before > 0, before, before * slope), rtol=1e-6, atol=1e-7)
    assert (before < 0).any()


def test_image_input_is_bgr_resized_mean_subtracted_and_scaled(tmp_path: Path) -> None:
    """PNet at 48x48 on the photo with MTCNN's preprocessing, (x - 127.5) * 0.0078125: a fully convolutional run."""
    from PIL import Image

    from caffeport.readers.preprocess import image_input, resize_bilinear

    out = tmp_path / "o.npz"
    result = _cli("run", PNET, "-p", PNET_PROTO, "--image", PHOTO, "--mean", "127.5,127.5,127.5",
                  "--scale", "0.0078125", "--resize", "48,48", "-o", out)
    assert result.returncode == 0, result.stderr
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"), dtype=np.float32)
    want = (resize_bilinear(rgb, 48, 48)[:, :, ::-1].transpose(2, 0, 1)[None] - 127.5) * 0.0078125
    net = caffeport.read(PNET, PNET_PROTO)
    expected = caffeport.run(net, {"data": want.astype(np.float32)})
    with np.load(out) as saved:
        assert saved["prob1"].shape == (1, 2, 19, 19)  # 48 -conv3-> 46 -pool(ceil)-> 23 -> 21 -> 19 -> 19
        np.testing.assert_allclose(saved["prob1"], expected["prob1"], rtol=1e-5, atol=1e-6)
    full = image_input(PHOTO, (1, 3, rgb.shape[0], rgb.shape[1]))
    np.testing.assert_array_equal(full[0, 0], rgb[:, :, 2])  # BGR, as Caffe's images: channel 0 is blue
    np.testing.assert_array_equal(image_input(PHOTO, full.shape, swap_rb=True)[0, 0], rgb[:, :, 0])


def test_resize_matches_opencv_inter_linear_on_a_float_image() -> None:
    import cv2

    from caffeport.readers.preprocess import resize_bilinear

    image = np.random.default_rng(0).uniform(0, 255, (37, 53, 3)).astype(np.float32)
    for size in [(12, 12), (24, 80), (100, 61)]:
        want = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(resize_bilinear(image, *size), want, rtol=1e-5, atol=1e-3)


def test_missing_and_misshapen_inputs_are_clear_errors(tmp_path: Path) -> None:
    net = caffeport.read(PNET, PNET_PROTO)
    with pytest.raises(InputError, match=r"no value given for input 'data' \(expected shape \[1, 3, 12, 12\]\)"):
        caffeport.run(net, {})
    with pytest.raises(InputError, match=r"input 'data' has shape \[3, 12, 12\], expected \[1, 3, 12, 12\]"):
        caffeport.run(net, {"data": np.zeros((3, 12, 12), np.float32)})
    with pytest.raises(InputError, match="no input named 'image'"):
        caffeport.run(net, {"data": np.zeros((1, 3, 12, 12), np.float32), "image": np.zeros(3)})
    with pytest.raises(InputError, match="cannot run at input size"):
        caffeport.run(net, {"data": np.zeros((1, 3, 5, 5), np.float32)})  # smaller than the receptive field
    np.save(tmp_path / "bad.npy", np.zeros((1, 4, 12, 12), np.float32))
    result = _cli("run", PNET, "-p", PNET_PROTO, "--input", tmp_path / "bad.npy", "-o", tmp_path / "o.npz")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "conv1" in result.stderr and not (tmp_path / "o.npz").exists()


def test_unsupported_layers_are_listed_at_once_before_any_work(tmp_path: Path) -> None:
    text = PNET_PROTO.read_text()
    old = 'type: "Pooling"'
    assert old in text
    proto = tmp_path / "det1.prototxt"
    proto.write_text(text.replace("  pooling_param {\n    pool: MAX", "  pooling_param {\n    pool: STOCHASTIC", 1)
                     .replace('type: "Softmax"', 'type: "MyPythonLayer"'))
    net = caffeport.read(PNET, proto)
    with pytest.raises(UnsupportedModelError) as caught:
        caffeport.run(net, {"data": np.zeros((1, 3, 12, 12), np.float32)})
    message = str(caught.value)
    assert "2 layer(s)" in message and "'pool1' (Pooling)" in message and "'prob1' (MyPythonLayer)" in message
    inspected = _cli("inspect", PNET, "-p", proto)
    assert inspected.returncode == 0 and "run: the reference forward cannot run 2 layer(s)" in inspected.stdout


def test_run_needs_an_output_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "o.npz"
    out.write_bytes(b"keep")
    result = _cli("run", PNET, "-p", PNET_PROTO, "--random", "1", "-o", out)
    assert result.returncode == 1 and "--force" in result.stderr and out.read_bytes() == b"keep"
    assert _cli("run", PNET, "-p", PNET_PROTO, "--random", "1", "-o", out, "--force").returncode == 0


def test_help_explains_run() -> None:
    result = _cli("run", "--help")
    assert result.returncode == 0
    for flag in ("--input", "--image", "--mean", "--scale", "--swap-rb", "--resize", "--random", "--all-layers"):
        assert flag in result.stdout
