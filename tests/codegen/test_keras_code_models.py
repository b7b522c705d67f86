"""``-f keras-code`` on the shared models: generate, ``ruff check`` the model.py, run it in a fresh interpreter that
cannot import caffeport (several models per interpreter: TensorFlow is slow to import), and compare every output and
every intermediate top (NHWC transposed back to NCHW) with caffeport.run at 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import caffeport
from tests.codegen.codegen_helpers import ruff_check
from tests.codegen.keras_code_helpers import run_keras_generated
from tests.codegen.test_torch_code_models import RECURRENT, SHARED, YUNET, _files, _folded_batchnorms, _inputs
from tests.conftest import models_dir
from tests.proof.reference_nets import assert_close

#: the shared models keras-code generates whole (no stub), in groups run by one interpreter each
GROUPS = {
    "mtcnn": ["mtcnn-det1", "mtcnn-det2", "mtcnn-det3", "mtcnn-det4"],
    "classifiers": ["lenet-v1", "lenet-v2", "cifar10-v1", "cifar10-v2", "cifar10-v2-hdf5", "a_lenet", "a_lenet_v1",
                    "opencv-conv", "opencv-ip"],
    "resnet": ["b_resnet_block", "resnet50-head-bn"],
    "others": ["hyperlpr-fp32", "hyperlpr-fp16", "hyperlpr-segfree", "c_deconv_prelu"],
    "reshapes": ["ultraface", "d_grouped", "opencv-deconv", "e_recurrent"],
}


#: e_recurrent (Embed, LSTM, InnerProduct over axis 2) is not in the torch tests' SHARED: its inputs must be token
#: ids and a cont restarting the streams, so it is fed the inputs Caffe itself was fed (`_model_inputs`)
SHARED = {**SHARED, "e_recurrent": RECURRENT, "yunet": YUNET}


def _model_inputs(name: str, net: caffeport.Net) -> dict[str, np.ndarray]:
    if name == "e_recurrent":
        with np.load(_files(RECURRENT)[0].with_name("inputs.npz")) as z:
            return {k: z[k].astype(np.float32) for k in net.inputs}
    return _inputs(net)


def _generate(name: str, out: Path, backend: str | None = None) -> tuple[caffeport.Net, caffeport.ConvertResult]:
    model, proto = _files(SHARED[name])
    result = caffeport.convert(model, proto, out, format="keras-code", backend=backend)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.py", "weights.h5"]
    ruff_check(out / "model.py")
    source = (out / "model.py").read_text()
    assert "import caffeport" not in source and "from caffeport" not in source
    return caffeport.read(model, proto), result


def _check_models(names: list[str], tmp_path: Path, data_format: str = "channels_last") -> None:
    """Generate ``names`` for ``data_format``, run them in one interpreter, compare every top with the reference."""
    nets, runs = [], []
    for name in names:
        net, result = _generate(name, tmp_path / name, "channels_first" if data_format == "channels_first" else None)
        assert not [w for w in result.warnings if "keras-code" in w], name  # nothing stubbed
        assert result.backend == ("channels_first" if data_format == "channels_first" else "tensorflow")
        inputs = _model_inputs(name, net)
        nets.append((name, net, inputs))
        runs.append((tmp_path / name, inputs, list(net.inputs)))
    for (name, net, inputs), (got, plain) in zip(nets, run_keras_generated(runs, data_format=data_format),
                                                 strict=True):
        want = caffeport.run(net, inputs, all_layers=True)
        assert plain == sorted(caffeport.forward.net_outputs(net)), name
        folded = _folded_batchnorms(net)
        expected = {k for k in want if k.partition("/")[0] not in folded}
        assert set(got) == expected, (name, sorted(set(got) ^ expected))
        for key in sorted(expected):
            assert_close(f"{name} {key}", got[key], want[key])
        assert len(expected) >= len(net.layers) - len(folded)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_generated_keras_models_match_the_reference_top_by_top(group: str, tmp_path: Path) -> None:
    _check_models(GROUPS[group], tmp_path)


def test_channels_first_models_match_the_reference_top_by_top(tmp_path: Path) -> None:
    """``--backend channels_first``: every shared model generated NCHW (Caffe's own layout: inputs, PReLU
    alphas (C, 1, 1), the InnerProducts after a 4-D blob without a transpose) and run under Keras' JAX backend
    (one interpreter; TensorFlow's convolves NCHW only on a GPU) equals the reference top by top, yunet's
    detections on the photo included."""
    (tmp_path / "shared").mkdir()
    _check_models([name for group in sorted(GROUPS) for name in GROUPS[group]], tmp_path / "shared",
                  data_format="channels_first")
    net, _ = _generate("yunet", tmp_path / "yunet", "channels_first")
    source = (tmp_path / "yunet" / "model.py").read_text()
    assert 'keras.Input(shape=(3, 240, 320), name="data")' in source
    assert 'CaffeDetectionOutput([2, 2, 3], ' in source and 'data_format="channels_first"' in source
    inputs = {"data": _astronaut((320, 240))}
    ((got, plain),) = run_keras_generated([(tmp_path / "yunet", inputs, list(net.inputs))],
                                          data_format="channels_first")
    want = caffeport.run(net, inputs, all_layers=True)
    assert plain == ["detection_out"]
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    assert got["detection_out"].shape == want["detection_out"].shape and want["detection_out"].shape[2] > 5
    for key in sorted(want):
        assert_close(f"yunet {key}", got[key], want[key])


def test_the_comparison_catches_keras_pooling_in_place_of_caffes(tmp_path: Path) -> None:
    """The check can fail: the usual port of Caffe's ceil-mode AVE pooling (pad the overhang with zeros, Keras'
    'valid' pooling dividing every window by the whole kernel) gives CIFAR-10's clipped last windows other values."""
    net, _ = _generate("cifar10-v2", tmp_path / "m")
    source = (tmp_path / "m" / "model.py").read_text()
    naive = source.replace('CaffePool2D("AVE", (3, 3), (2, 2), (0, 0), ceil=True, data_format="channels_last", '
                           'name="pool2")',
                           '(lambda x: layers.AveragePooling2D((3, 3), (2, 2), name="pool2")'
                           '(layers.ZeroPadding2D(((0, 1), (0, 1)))(x)))')
    assert naive != source
    (tmp_path / "m" / "model.py").write_text(naive)
    inputs = _inputs(net)
    ((got, _),) = run_keras_generated([(tmp_path / "m", inputs, list(net.inputs))])
    want = caffeport.run(net, inputs, all_layers=True)
    assert_close("pool1/pool1", got["pool1/pool1"], want["pool1/pool1"])
    assert got["pool2/pool2"].shape == want["pool2/pool2"].shape
    with pytest.raises(AssertionError, match="pool2/pool2: relative error"):
        assert_close("pool2/pool2", got["pool2/pool2"], want["pool2/pool2"])



def _astronaut(size: tuple[int, int]) -> np.ndarray:
    """The shared photo as raw BGR 0-255 NCHW at (width, height), as libfacedetection's OpenCV example feeds it."""
    import cv2

    path = models_dir().parent / "images" / "astronaut.png"
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is missing"
    return np.ascontiguousarray(cv2.resize(image, size).transpose(2, 0, 1)[None], dtype=np.float32)


def test_yunet_is_generated_whole_and_detects_the_astronaut_as_the_reference(tmp_path: Path) -> None:
    """yunet: Normalize, Permute, Flatten, PriorBox (a constant), Concat, Reshape, Softmax and DetectionOutput are
    all generated; fed the photo, every top matches the reference, the detection rows included (the face first,
    score > 0.9, then the low-score candidates: same count, same order)."""
    net, result = _generate("yunet", tmp_path / "yunet")
    assert not [w for w in result.warnings if "keras-code" in w]
    source = (tmp_path / "yunet" / "model.py").read_text()
    assert "CaffeConstant(" in source and "CaffeNormalize(" in source and "CaffeDetectionOutput(" in source
    inputs = {"data": _astronaut((320, 240))}
    ((got, plain),) = run_keras_generated([(tmp_path / "yunet", inputs, list(net.inputs))])
    want = caffeport.run(net, inputs, all_layers=True)
    assert plain == ["detection_out"]
    assert set(got) == set(want), sorted(set(got) ^ set(want))
    rows = want["detection_out"].reshape(-1, 7)
    assert len(rows) > 5 and rows[0, 2] > 0.9
    for key in sorted(want):
        assert_close(f"yunet {key}", got[key], want[key])


def test_caffe_written_models_match_caffes_own_outputs(tmp_path: Path) -> None:
    """An oracle independent of caffeport.run: d_grouped (grouped and depthwise conv, standalone Scale / Bias) and
    e_recurrent (Embed, LSTM with a stream restarted at t=3) fed the inputs Caffe was fed, every top compared with
    the blob BVLC Caffe computed (``outputs_per_layer.npz``, key ``<layer>__<top>``); opencv-deconv (group 3,
    kernel 4x5, stride 2x3, pad 0/1) with the Caffe forward output stored beside it."""
    runs, wanted = [], []
    for name in ("d_grouped", "e_recurrent", "opencv-deconv"):
        net, _ = _generate(name, tmp_path / name)
        folder = _files(SHARED[name])[0].parent
        if name == "opencv-deconv":
            inputs = {"input": np.load(folder / "layer_deconvolution.input.npy").astype(np.float32)}
            want = {"output/output": np.load(folder / "layer_deconvolution.npy")}
        else:
            if name == "e_recurrent":
                inputs = _model_inputs(name, net)
            else:
                inputs = {"data": np.load(folder / "input.npy").astype(np.float32)}
            with np.load(folder / "outputs_per_layer.npz") as z:
                want = {k.replace("__", "/"): z[k] for k in z.files}
        runs.append((tmp_path / name, inputs, list(net.inputs)))
        wanted.append((name, want))
    for (name, want), (got, _) in zip(wanted, run_keras_generated(runs), strict=True):
        assert set(want) <= set(got), (name, sorted(set(want) - set(got)))
        for key in sorted(want):
            assert_close(f"{name} {key} (Caffe's own)", got[key], want[key])
