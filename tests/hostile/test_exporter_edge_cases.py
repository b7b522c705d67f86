"""Valid models that used to end in a traceback inside an exporter, and blobs that do not fit their layer.

Caffe accepts all of these models, so each must either convert or be refused
with one `CaffeportError` naming what to change, and never leave a file:

- two weighted layers of one name (Caffe allows it): every by-name format refuses, naming both layers;
- a real layer named like one a backend splits off (``emb_bias`` beside an Embed ``emb`` with a bias,
  ``rnn_output`` beside an RNN ``rnn``): refused, saying which of the two is the split-off one;
- npz with a layer name too long for a zip member name (16-bit length): refused; one byte shorter works;
- keras-h5 with more than ~4,030 weighted layers, whose ``layer_names`` outgrows an HDF5 object header
  message (64 KiB): split as Keras splits it, and read back by Keras' own reader and by a Keras 3 model;
- blobs the layer cannot use (an empty BatchNorm scale factor, 0-D LSTM blobs, a 1-D LSTM weight for
  ``-f flax``): refused by the blob check before any transform runs.

The models are built here with `tests.protowriter`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path

import h5py
import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, ModelStructureError
from caffeport.exporters import keras_h5
from tests import protowriter as pw
from tests.hostile.hostile_helpers import hang_guard

#: the formats that key weights by layer name and so cannot hold two layers of one name
BY_NAME_FORMATS = ["keras-h5", "npz", "safetensors", "flax"]
ALL_FORMATS = ["keras-h5", "npz", "safetensors", "flax", "ir", "pickle", "caffe"]


def caffe_layer(name: str, type_: str, bottoms: list[str], tops: list[str], blobs: list[np.ndarray] = (),
                params: bytes = b"") -> bytes:
    """A V2 LayerParameter (NetParameter field 100) with float32 blobs and encoded ``params``."""
    body = pw.string(1, name) + pw.string(2, type_)
    body += b"".join(pw.string(3, b) for b in bottoms) + b"".join(pw.string(4, t) for t in tops)
    body += b"".join(pw.ld(7, pw.blob(np.asarray(b, dtype=np.float32))) for b in blobs)
    return pw.ld(100, body + params)


def write_caffemodel(path: Path, *layers: bytes) -> Path:
    path.write_bytes(pw.string(1, "edge") + b"".join(layers))
    return path


def inner_product(num_output: int) -> bytes:
    return pw.ld(117, pw.vint(1, num_output))


def fc(name: str, bottom: str, top: str, rows: int = 3, cols: int = 3, value: float = 1.0) -> bytes:
    return caffe_layer(name, "InnerProduct", [bottom], [top],
                       [np.full((rows, cols), value), np.full(rows, -value)], inner_product(rows))


def _layer_names(handle: h5py.File) -> list[str]:
    """``layer_names`` as Keras' own legacy loader reads it (whole or split into parts)."""
    from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group

    return list(load_attributes_from_hdf5_group(handle, "layer_names"))


def _refusal(model: Path, output: Path, fmt: str, backend: str | None = None) -> ModelStructureError:
    """The ModelStructureError converting ``model`` gives; nothing may be left beside the model."""
    before = sorted(os.listdir(model.parent))
    with hang_guard(), pytest.raises(ModelStructureError) as info:
        caffeport.convert(model, output=output, format=fmt, backend=backend)
    assert sorted(os.listdir(model.parent)) == before, f"{fmt}: a file was left behind"
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return info.value


# ---------------------------------------------------------------- two layers, one name


@pytest.mark.parametrize("fmt", BY_NAME_FORMATS)
def test_two_weighted_layers_of_one_name_are_refused_naming_both(tmp_path: Path, fmt: str) -> None:
    model = write_caffemodel(tmp_path / "dup.caffemodel", fc("fc", "x", "y"), fc("fc", "y", "z", value=2.0))
    message = str(_refusal(model, tmp_path / "out.bin", fmt))
    assert message.count("'fc' (InnerProduct)") == 2, message
    assert "rename one of them" in message


def test_two_layers_of_one_name_control(tmp_path: Path) -> None:
    """The same model with the second layer renamed converts: the refusal above is about the name alone."""
    model = write_caffemodel(tmp_path / "ok.caffemodel", fc("fc", "x", "y"), fc("fc2", "y", "z", value=2.0))
    for fmt in BY_NAME_FORMATS:
        caffeport.convert(model, output=tmp_path / f"out.{fmt}", format=fmt)
    with h5py.File(tmp_path / "out.keras-h5", "r") as f:
        assert _layer_names(f) == ["fc", "fc2"]
        assert f["fc2"]["fc2/kernel:0"][()].tolist() == [[2.0] * 3] * 3


def _embed_model(path: Path, neighbour: str) -> Path:
    embed = caffe_layer("emb", "Embed", ["x"], ["e"], [np.arange(15).reshape(5, 3), np.full(3, 7.0)],
                        pw.ld(137, pw.vint(1, 3) + pw.vint(2, 5)))
    return write_caffemodel(path, embed, fc(neighbour, "e", "z"))


def _rnn_model(path: Path, neighbour: str) -> Path:
    h = 3
    rnn = caffe_layer("rnn", "RNN", ["x", "cont"], ["h"],
                      [np.ones((h, 3)), np.ones(h), np.ones((h, h)), np.ones((h, h)), np.ones(h)],
                      pw.ld(146, pw.vint(1, h)))
    return write_caffemodel(path, rnn, fc(neighbour, "h", "z"))


@pytest.mark.parametrize("fmt", BY_NAME_FORMATS)
def test_real_layer_named_like_the_split_off_embed_bias(tmp_path: Path, fmt: str) -> None:
    model = _embed_model(tmp_path / "emb.caffemodel", "emb_bias")
    message = str(_refusal(model, tmp_path / "out.bin", fmt, backend="tensorflow"))
    assert "'emb_bias' (the bias of Embed 'emb')" in message and "'emb_bias' (InnerProduct)" in message, message


@pytest.mark.parametrize(("fmt", "backend"), [("keras-h5", "tensorflow"), ("keras-h5", "channels_first"),
                                              ("npz", "tensorflow"), ("safetensors", "torch"), ("flax", None)])
def test_real_layer_named_like_the_split_off_rnn_output(tmp_path: Path, fmt: str, backend: str | None) -> None:
    model = _rnn_model(tmp_path / "rnn.caffemodel", "rnn_output")
    message = str(_refusal(model, tmp_path / "out.bin", fmt, backend=backend))
    assert "'rnn_output' (the output projection of RNN 'rnn')" in message, message
    assert "'rnn_output' (InnerProduct)" in message, message


def test_split_off_layers_control(tmp_path: Path) -> None:
    """With another neighbour name both models convert, and the split-off layers are where Keras looks."""
    embed = _embed_model(tmp_path / "emb.caffemodel", "emb_bias2")
    rnn = _rnn_model(tmp_path / "rnn.caffemodel", "rnn_output2")
    caffeport.convert(embed, output=tmp_path / "emb.h5")
    caffeport.convert(rnn, output=tmp_path / "rnn.h5")
    with h5py.File(tmp_path / "emb.h5", "r") as f:
        assert _layer_names(f) == ["emb", "emb_bias", "emb_bias2"]
        assert f["emb_bias"]["emb_bias/bias:0"][()].tolist() == [7.0] * 3
    with h5py.File(tmp_path / "rnn.h5", "r") as f:
        assert _layer_names(f) == ["rnn", "rnn_output", "rnn_output2"]


# ---------------------------------------------------------------- name lengths


#: what the npz member name adds to a layer name with the caffe backend: "/0.npy"
_NPZ_MEMBER_EXTRA = len("/0.npy")


def test_npz_layer_name_too_long_for_a_zip_member_is_refused(tmp_path: Path) -> None:
    name = "n" * (0xFFFF - _NPZ_MEMBER_EXTRA + 1)  # the member name is one byte over the zip format's 16 bits
    model = write_caffemodel(tmp_path / "long.caffemodel", fc(name, "x", "y"))
    message = str(_refusal(model, tmp_path / "out.npz", "npz"))
    assert "65,535" in message and f"({len(name):,} characters)" in message, message


def test_npz_layer_name_at_the_zip_limit_round_trips(tmp_path: Path) -> None:
    name = "n" * (0xFFFF - _NPZ_MEMBER_EXTRA)
    model = write_caffemodel(tmp_path / "long.caffemodel", fc(name, "x", "y", value=3.0))
    caffeport.convert(model, output=tmp_path / "out.npz", format="npz")
    with np.load(tmp_path / "out.npz") as archive:
        assert archive[f"{name}/0"].tolist() == [[3.0] * 3] * 3
        assert archive[f"{name}/1"].tolist() == [-3.0] * 3


@pytest.mark.parametrize("fmt", [f for f in ALL_FORMATS if f != "npz"])
def test_formats_without_a_name_limit_take_a_70000_byte_name(tmp_path: Path, fmt: str) -> None:
    name = "n" * 70_000
    model = write_caffemodel(tmp_path / "long.caffemodel", fc(name, "x", "y", value=5.0))
    with hang_guard():
        caffeport.convert(model, output=tmp_path / "out.bin", format=fmt)
    assert (tmp_path / "out.bin").stat().st_size > 0
    if fmt == "keras-h5":
        with h5py.File(tmp_path / "out.bin", "r") as f:
            assert _layer_names(f) == [name]


# ---------------------------------------------------------------- many layers in keras-h5


#: more weighted layers than one HDF5 attribute of variable-length names holds (4,094 at most, measured)
MANY_LAYERS = 4_100


def _chain(path: Path, count: int) -> Path:
    """``count`` InnerProduct layers of one output each, layer i holding kernel [[i]] and bias [-i]."""
    layers = [caffe_layer(f"fc{i}", "InnerProduct", [f"b{i}"], [f"b{i + 1}"],
                          [np.full((1, 1), i), np.full(1, -i)], inner_product(1)) for i in range(count)]
    return write_caffemodel(path, *layers)


def test_keras_h5_with_more_layers_than_one_attribute_holds(tmp_path: Path) -> None:
    from keras.src.legacy.saving.legacy_h5_format import load_attributes_from_hdf5_group

    model = _chain(tmp_path / "deep.caffemodel", MANY_LAYERS)
    with hang_guard():
        caffeport.convert(model, output=tmp_path / "deep.h5")
    expected = [f"fc{i}" for i in range(MANY_LAYERS)]
    with h5py.File(tmp_path / "deep.h5", "r") as f:
        assert "layer_names" not in f.attrs and "layer_names0" in f.attrs and "layer_names1" in f.attrs
        assert load_attributes_from_hdf5_group(f, "layer_names") == expected  # Keras' own reader
        for i in (0, 1, 2047, 2048, 4095, MANY_LAYERS - 1):
            names = load_attributes_from_hdf5_group(f[f"fc{i}"], "weight_names")
            assert names == [f"fc{i}/kernel:0", f"fc{i}/bias:0"]
            assert f[f"fc{i}"][names[0]][()].tolist() == [[float(i)]]
            assert f[f"fc{i}"][names[1]][()].tolist() == [float(-i)]


def _dense_model(count: int) -> object:
    import keras

    inputs = keras.Input((1,))
    return keras.Model(inputs, [keras.layers.Dense(1, name=f"fc{i}")(inputs) for i in range(count)])


def test_keras3_loads_a_split_layer_names_file_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small model whose file is forced to split (2 names per attribute) loads whole into Keras 3 by name.

    Building a Keras 3 model of 4,100 layers and loading it takes about a
    minute (measured: 44 s to build, 10 s to load); the split itself is the
    same at any size. The negative control drops one part: Keras then leaves
    those layers at their initial values, which the comparison catches.
    """
    count = 5
    monkeypatch.setattr(keras_h5, "NAMES_PER_ATTRIBUTE", 2)
    model_file = _chain(tmp_path / "small.caffemodel", count)
    caffeport.convert(model_file, output=tmp_path / "split.h5")
    with h5py.File(tmp_path / "split.h5", "r") as f:
        assert sorted(k for k in f.attrs if k.startswith("layer_names")) == [
            "layer_names0", "layer_names1", "layer_names2"]

    def loaded(path: Path) -> list[tuple[float, float]]:
        keras_model = _dense_model(count)
        for layer in keras_model.layers[1:]:  # known values that no layer of the file holds
            layer.set_weights([np.full((1, 1), 100.0, np.float32), np.full(1, 100.0, np.float32)])
        keras_model.load_weights(path, by_name=True)
        return [(float(layer.get_weights()[0][0, 0]), float(layer.get_weights()[1][0]))
                for layer in keras_model.layers[1:]]

    expected = [(float(i), float(-i)) for i in range(count)]
    assert loaded(tmp_path / "split.h5") == expected
    with h5py.File(tmp_path / "split.h5", "r+") as f:
        del f.attrs["layer_names1"]  # Keras stops at the first missing part: fc2.. stay unloaded
    assert loaded(tmp_path / "split.h5") == expected[:2] + [(100.0, 100.0)] * (count - 2)


# ---------------------------------------------------------------- blobs that do not fit their layer


def _lstm(path: Path, blobs: list[np.ndarray], hidden: int = 2) -> Path:
    return write_caffemodel(path, caffe_layer("lstm", "LSTM", ["x", "cont"], ["h"], blobs,
                                              pw.ld(146, pw.vint(1, hidden))))


def _bad_blob_models(tmp_path: Path) -> dict[str, Path]:
    hidden, inputs = 2, 3
    return {
        "batchnorm_empty_scale_factor": write_caffemodel(
            tmp_path / "bn.caffemodel",
            caffe_layer("bn", "BatchNorm", ["x"], ["y"], [np.ones(3), np.ones(3), np.zeros((0,))])),
        "lstm_0d_blobs": _lstm(tmp_path / "lstm0d.caffemodel", [np.array(1.0)] * 3, hidden),
        "lstm_1d_weight": _lstm(tmp_path / "lstm1d.caffemodel",
                                [np.ones(4 * hidden * inputs), np.ones(4 * hidden), np.ones((4 * hidden, hidden))],
                                hidden),
    }


@pytest.mark.parametrize("case", ["batchnorm_empty_scale_factor", "lstm_0d_blobs", "lstm_1d_weight"])
@pytest.mark.parametrize("fmt", ["flax", "keras-h5", "safetensors", "npz"])
def test_blobs_that_do_not_fit_their_layer_are_refused_before_writing(tmp_path: Path, case: str, fmt: str) -> None:
    model = _bad_blob_models(tmp_path)[case]
    error = _refusal(model, tmp_path / "out.bin", fmt)
    layer = "bn" if case.startswith("batchnorm") else "lstm"
    assert error.layer == layer and error.path == str(model), error
    assert "blob" in error.message


def test_blob_check_control(tmp_path: Path) -> None:
    """The same layers with blobs of the right shapes convert to flax, the format the 1-D weight once broke."""
    hidden, inputs = 2, 3
    lstm = _lstm(tmp_path / "lstm.caffemodel", [np.ones((4 * hidden, inputs)), np.ones(4 * hidden),
                                                 np.ones((4 * hidden, hidden))], hidden)
    bn = write_caffemodel(tmp_path / "bn.caffemodel",
                          caffe_layer("bn", "BatchNorm", ["x"], ["y"], [np.ones(3), np.ones(3), np.ones(1)]))
    for model in (lstm, bn):
        try:
            caffeport.convert(model, output=tmp_path / f"{model.stem}.msgpack", format="flax")
        except CaffeportError as exc:
            pytest.fail(f"a well-formed {model.stem} was refused: {exc}")
        assert (tmp_path / f"{model.stem}.msgpack").stat().st_size > 0
