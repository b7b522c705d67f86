"""``caffeport verify --keras``: a generated and a hand-written Keras 3 model beside the reference forward.

The hand-written one is MTCNN's P-Net as a Keras user writes it (NHWC, layers
named after the Caffe layers, weights from caffeport's npz), with the pooling
padding the usual Keras port chooses: ``'same'`` is Caffe's ceil rounding for
this 2x2 window, ``'valid'`` is floor. At P-Net's own 12x12 both give 5x5; at
25x25 Caffe gives 12x12 and ``'valid'`` 11x11, so ``verify`` must name pool1.
Each case runs the CLI in a child (the way a user runs it, the model module
found on ``sys.path`` from the working directory).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import caffeport
from tests.conftest import models_dir
from tests.verify.verify_helpers import DET1, DET1_PROTO, line_of, save_blobs, square_input, verify_cli

PNET = '''
"""MTCNN's P-Net written by hand in Keras 3 (NHWC), its weights from caffeport's npz beside this file."""
from pathlib import Path

import keras
import numpy as np

PADDING = "{padding}"


def build():
    blobs = np.load(Path(__file__).with_name("det1.npz"))
    data = keras.Input((None, None, 3), name="data")
    x = keras.layers.Conv2D(10, 3, name="conv1")(data)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="PReLU1")(x)
    x = keras.layers.MaxPooling2D(2, 2, padding=PADDING, name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, name="conv2")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="PReLU2")(x)
    x = keras.layers.Conv2D(32, 3, name="conv3")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="PReLU3")(x)
    score = keras.layers.Conv2D(2, 1, name="conv4-1")(x)
    prob = keras.layers.Softmax(axis=-1, name="prob1")(score)
    box = keras.layers.Conv2D(4, 1, name="conv4-2")(x)
    model = keras.Model(data, {{"prob1": prob, "conv4-2": box}})
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([blobs[f"{{layer.name}}/0"].transpose(2, 3, 1, 0), blobs[f"{{layer.name}}/1"]])
        elif isinstance(layer, keras.layers.PReLU):
            layer.set_weights([blobs[f"{{layer.name}}/0"].reshape(1, 1, -1)])
    return model
'''






def _pnet(tmp_path: Path, padding: str) -> None:
    save_blobs(DET1, DET1_PROTO, tmp_path / "det1.npz")
    (tmp_path / "kpnet.py").write_text(textwrap.dedent(PNET.format(padding=padding)))




def test_generated_keras_code_verifies_every_layer(tmp_path: Path) -> None:
    out = tmp_path / "det1code"
    caffeport.convert(DET1, DET1_PROTO, out, format="keras-code")
    result = verify_cli(DET1, "-p", DET1_PROTO, "--keras", "model:load_model", "--input",
                     f"data={square_input(tmp_path, 12)}", "--all-layers", cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    for key in ("conv1/conv1", "pool1/pool1", "conv4-1/conv4-1", "conv4-2/conv4-2", "prob1/prob1"):
        assert line_of(result.stdout, key).rstrip().endswith("ok"), key
    assert "FAIL" not in result.stdout


def test_generated_keras_code_of_numbered_layers_verifies_every_layer(tmp_path: Path) -> None:
    """UltraFace's layers are named by number ("245"): the generated model calls that one ``_245`` (an identifier
    cannot start with a digit) and verify pairs the two through the same rule, so none is "not exposed"."""
    folder = models_dir() / "ultraface-rfb320"
    model, deploy = folder / "RFB-320.caffemodel", folder / "RFB-320.prototxt"
    out = tmp_path / "ultraface"
    caffeport.convert(model, deploy, out, format="keras-code")
    assert 'name="_245"' in (out / "model.py").read_text()
    result = verify_cli(model, "-p", deploy, "--keras", "model:load_model", "--random", "0", "--all-layers", cwd=out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line_of(result.stdout, "245/245").split()[0] == "_245"
    assert line_of(result.stdout, "245/245").rstrip().endswith("ok")
    assert "not exposed" not in result.stdout


def test_generated_channels_first_keras_code_verifies_and_a_softmax_over_the_last_axis_is_named(
        tmp_path: Path) -> None:
    """``-f keras-code --backend channels_first`` under Keras' torch backend (TensorFlow's convolves NCHW only on
    a GPU): verify sees the (3, 12, 12) input, feeds NCHW and compares every layer untransposed. The same model
    with prob1's Softmax over the last axis (Keras' default, the usual slip in an NCHW port) is named, exit 1."""
    out = tmp_path / "det1nchw"
    caffeport.convert(DET1, DET1_PROTO, out, format="keras-code", backend="channels_first")
    torch_backend = {"KERAS_BACKEND": "torch"}
    args = (DET1, "-p", DET1_PROTO, "--keras", "model:load_model", "--input", f"data={square_input(tmp_path, 12)}",
            "--all-layers")
    result = verify_cli(*args, cwd=out, env=torch_backend)
    assert result.returncode == 0, result.stdout + result.stderr
    for key in ("conv1/conv1", "PReLU1/conv1", "pool1/pool1", "conv4-1/conv4-1", "conv4-2/conv4-2", "prob1/prob1"):
        assert line_of(result.stdout, key).rstrip().endswith("ok"), key
    source = (out / "model.py").read_text()
    last_axis = source.replace('layers.Softmax(axis=-3, name="prob1")', 'layers.Softmax(axis=-1, name="prob1")')
    assert last_axis != source
    (out / "model.py").write_text(last_axis)
    result = verify_cli(*args, cwd=out, env=torch_backend)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL" in line_of(result.stdout, "prob1/prob1")
    assert line_of(result.stdout, "conv4-1/conv4-1").rstrip().endswith("ok")  # Keras layer conv4_1, paired


def test_the_console_script_finds_the_generated_module_in_the_working_directory(tmp_path: Path) -> None:
    """``caffeport verify --keras model:load_model`` run as the console script from the generated folder (whose
    ``sys.path`` starts with the script's directory, not the working one) imports the folder's model.py."""
    out = tmp_path / "det1code"
    caffeport.convert(DET1, DET1_PROTO, out, format="keras-code")
    script = Path(sys.executable).with_name("caffeport")
    result = subprocess.run([str(script), "verify", str(DET1), "-p", str(DET1_PROTO), "--keras", "model:load_model",
                             "--input", f"data={square_input(tmp_path, 12)}"], capture_output=True, text=True,
                            cwd=out, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line_of(result.stdout, "prob1/prob1").rstrip().endswith("ok")


@pytest.mark.parametrize("size", [12, 25])
def test_hand_written_pnet_same_padding_passes(tmp_path: Path, size: int) -> None:
    _pnet(tmp_path, "same")
    result = verify_cli(DET1, "-p", DET1_PROTO, "--keras", "kpnet:build", "--input",
                        f"data={square_input(tmp_path, size)}", "--all-layers", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 of 10 tensors match" in result.stdout


def test_hand_written_pnet_valid_padding_is_named_pool1(tmp_path: Path) -> None:
    _pnet(tmp_path, "valid")
    at12 = verify_cli(DET1, "-p", DET1_PROTO, "--keras", "kpnet:build", "--input", f"data={square_input(tmp_path, 12)}",
                   "--all-layers", cwd=tmp_path)
    assert at12.returncode == 0, at12.stdout + at12.stderr
    at25 = verify_cli(DET1, "-p", DET1_PROTO, "--keras", "kpnet:build", "--input", f"data={square_input(tmp_path, 25)}",
                   "--all-layers", cwd=tmp_path)
    assert at25.returncode == 1, at25.stdout + at25.stderr
    assert "first divergence: layer pool1 (type Pooling), top pool1/pool1" in at25.stdout
    assert "shape [1, 10, 11, 11], Caffe's is [1, 10, 12, 12]" in line_of(at25.stdout, "pool1/pool1")
    assert line_of(at25.stdout, "PReLU1/conv1").rstrip().endswith("ok")
