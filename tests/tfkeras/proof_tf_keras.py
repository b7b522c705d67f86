"""tf_keras loads caffeport's keras-h5 files by name, and ``caffeport check`` takes tf_keras models.

Run in a venv of its own (`.ci/run` makes ``.venv-tfkeras``: tf-keras needs the
full ``tensorflow`` package, which cannot sit beside the main venv's
``tensorflow-cpu``), with caffeport installed without extras:

    .venv-tfkeras/bin/python -m pytest -q -p no:cacheprovider tests/tfkeras/proof_tf_keras.py

The file name does not start with ``test_``, so the main suite (which has no
tf_keras) does not collect it. For each MTCNN net the file caffeport writes is
loaded with tf_keras' own ``load_weights(path, by_name=True)`` into a
hand-written tf_keras mirror (tf_keras_models.py); every weight must be the
file's, none may keep its initial value, and every layer's output must match
`caffeport.run`, the project's reference forward (checked against Caffe's
own outputs elsewhere), at 1e-4 relative.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import h5py
import numpy as np
import pytest
import tf_keras

import caffeport
from caffeport.cli import main
from tests.proof.reference_nets import MTCNN_MODELS, assert_all_close, caffe_forward, model_files, mtcnn_input, to_nchw
from tests.proof.reference_nets import to_nhwc as nhwc
from tests.tfkeras.tf_keras_models import BUILDERS, det1_misnamed_prelu


def file_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """The keras-h5 file as Keras reads it: layer_names, then each group's weight_names, in order."""
    with h5py.File(path, "r") as f:
        groups = {}
        for raw in f.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            names = [w.decode() if isinstance(w, bytes) else str(w) for w in f[name].attrs["weight_names"]]
            if names:
                groups[name] = [np.asarray(f[name][w]) for w in names]
    return groups


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    paths = {}
    for name in MTCNN_MODELS:
        path = tmp_path_factory.mktemp(name) / f"{name}.h5"
        caffeport.convert(*model_files(name), path)
        paths[name] = path
    return paths


def test_this_is_tf_keras() -> None:
    """The premise: the models below are tf_keras 2 models, not Keras 3 ones."""
    assert tf_keras.__version__.startswith("2."), tf_keras.__version__
    model = BUILDERS["det1"]()
    assert isinstance(model, tf_keras.Model) and type(model).__module__.startswith("tf_keras")


@pytest.mark.parametrize("name", MTCNN_MODELS)
def test_tf_keras_by_name_load_reproduces_the_reference(name: str, converted: dict[str, Path]) -> None:
    model = BUILDERS[name]()
    weighted = {layer.name: layer for layer in model.layers if layer.weights}
    fresh = {name: layer.get_weights() for name, layer in weighted.items()}
    stored = file_weights(converted[name])
    assert sorted(stored) == sorted(weighted), "the file's weighted layers and the mirror's differ"
    model.load_weights(str(converted[name]), by_name=True)
    for layer_name, layer in weighted.items():
        loaded = layer.get_weights()
        assert len(loaded) == len(stored[layer_name])
        for got, want in zip(loaded, stored[layer_name]):
            np.testing.assert_array_equal(got, want, err_msg=f"{layer_name}: not the file's weights")
        assert any(not np.array_equal(a, b) for a, b in zip(loaded, fresh[layer_name])), \
            f"{layer_name}: still at its initial values"

    net = caffeport.read(*model_files(name))
    inputs = mtcnn_input(net)
    expected = caffe_forward(net, inputs)
    feed = nhwc(inputs["data"])
    got = {key: to_nchw(np.asarray(value)) for key, value in model(feed, training=False).items()}
    assert_all_close(got, expected)


def test_check_takes_tf_keras_models(converted: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(converted["det1"]), "--keras-model", "tests.tfkeras.tf_keras_models:det1"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "every weighted layer matches" in out.out

    code = main(["check", str(converted["det1"]), "--keras-model", "tests.tfkeras.tf_keras_models:det1_misnamed_prelu"])
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert "(no weights of that name in the file): prelu1" in out.out
    assert "(ignored without a word): PReLU1" in out.out

    # what the report claims tf_keras does: the misnamed PReLU keeps alpha 0 without a word ...
    model = det1_misnamed_prelu()
    model.load_weights(str(converted["det1"]), by_name=True)
    assert not model.get_layer("prelu1").get_weights()[0].any()
    # ... and a shape mismatch raises
    with pytest.raises(ValueError, match="Shape mismatch in layer"):
        BUILDERS["det2"]().load_weights(str(converted["det1"]), by_name=True)


def test_keras3_format_refuses_a_tf_keras_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    caffemodel, prototxt = model_files("det1")
    code = main(["convert", str(caffemodel), "-p", str(prototxt), "-f", "keras3", "--keras-model",
                 "tests.tfkeras.tf_keras_models:det1", "-o", str(tmp_path / "w.weights.h5")])
    err = capsys.readouterr().err
    assert code == 1
    assert "-f keras3 writes Keras 3 files" in err and "tf_keras" in err
    assert not list(tmp_path.iterdir())
