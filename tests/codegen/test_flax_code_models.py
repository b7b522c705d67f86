"""``-f flax-code`` on the shared models: generate, ``ruff check`` the model.py, run it in a fresh interpreter that
cannot import caffeport (several models per interpreter, one ``jax.jit`` per model), and compare every output and
every intermediate top (4-D ones NHWC, transposed back to NCHW) with caffeport.run at 1e-4.

Also: e_recurrent's Embed and LSTM are generated whole; yunet's DetectionOutput (numpy, the model run without
jit) gives the reference's detections on a photo and its -1 rows on a black image; PNet runs at other input
sizes; two negative controls (Flax's floor-rounding 'VALID' pooling in place of Caffe's ceil rule, whole-kernel
AVE divisors in place of Caffe's clipped ones) make the comparison fail where Caffe's rule matters;
``caffeport verify --flax`` checks a generated folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError
from caffeport.exporters import load_exporters
from tests.codegen.codegen_helpers import ROOT, ruff_check
from tests.codegen.flax_code_helpers import run_flax_failure, run_flax_generated
from tests.codegen.test_torch_code_models import (
    RECURRENT,
    SHARED,
    YUNET,
    _files,
    _folded_batchnorms,
    _inputs,
    compare_with_reference,
)
from tests.proof.reference_nets import assert_close

#: every shared model of the torch-code tests, generated whole (no stub), in groups run by one interpreter each
GROUPS = {
    "mtcnn": ["mtcnn-det1", "mtcnn-det2", "mtcnn-det3", "mtcnn-det4"],
    "classifiers": ["lenet-v1", "lenet-v2", "cifar10-v1", "cifar10-v2", "cifar10-v2-hdf5", "a_lenet", "a_lenet_v1"],
    "resnet": ["b_resnet_block", "resnet50-head-bn", "hyperlpr-segfree"],
    "others": ["hyperlpr-fp32", "hyperlpr-fp16", "ultraface", "opencv-conv", "opencv-deconv", "opencv-ip",
               "c_deconv_prelu", "d_grouped"],
}
FILES = ["README.md", "model.py", "weights.msgpack"]


def test_the_groups_cover_every_shared_model_of_the_torch_code_tests() -> None:
    assert sorted(name for names in GROUPS.values() for name in names) == sorted(SHARED)


def test_the_format_is_a_directory_format_of_the_torch_backend() -> None:
    exporter = load_exporters("flax-code")["flax-code"]
    assert exporter.directory and exporter.backends == ("torch",) and exporter.default_backend == "torch"


def _generate(pair: tuple[str, str], out: Path) -> tuple[caffeport.Net, caffeport.ConvertResult]:
    model, proto = _files(pair)
    result = caffeport.convert(model, proto, out, format="flax-code")
    assert sorted(p.name for p in out.iterdir()) == FILES
    ruff_check(out / "model.py")
    source = (out / "model.py").read_text()
    assert "import caffeport" not in source and "from caffeport" not in source
    return caffeport.read(model, proto), result


def _compare(name: str, net: caffeport.Net, got: dict[str, np.ndarray], plain: list[str],
             inputs: dict[str, np.ndarray]) -> int:
    """Every output top and every ``<layer>/<top>`` of caffeport.run, but the folded BatchNorms'."""
    want = caffeport.run(net, inputs, all_layers=True)
    assert plain == sorted(caffeport.forward.net_outputs(net)), name
    folded = _folded_batchnorms(net)
    expected = {k for k in want if k.partition("/")[0] not in folded}
    assert set(got) == expected, (name, sorted(set(got) ^ expected))
    for key in sorted(expected):
        assert_close(f"{name} {key}", got[key], want[key])
    assert len(expected) >= len(net.layers) - len(folded)
    return len(expected)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_generated_flax_models_match_the_reference_top_by_top(group: str, tmp_path: Path) -> None:
    nets, runs = [], []
    for name in GROUPS[group]:
        net, result = _generate(SHARED[name], tmp_path / name)
        assert not [w for w in result.warnings if "flax-code" in w], name  # nothing stubbed
        inputs = _inputs(net)
        nets.append((name, net, inputs))
        runs.append((tmp_path / name, inputs, list(net.inputs)))
    for (name, net, inputs), (got, plain) in zip(nets, run_flax_generated(runs), strict=True):
        _compare(name, net, got, plain, inputs)


def test_the_file_is_readable_and_the_weights_are_flax_variables(tmp_path: Path) -> None:
    """Submodules named after the Caffe layers (NAME_MAP for the others), sources' sha256 in the docstring, Caffe's
    shapes in comments; the weights are what flax.serialization restores, in Flax's NHWC layouts."""
    import hashlib

    from flax.serialization import msgpack_restore, msgpack_serialize

    net, _ = _generate(SHARED["mtcnn-det1"], tmp_path / "m")
    source = (tmp_path / "m" / "model.py").read_text()
    for path in _files(SHARED["mtcnn-det1"]):
        assert f"{path.name}  sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in source
    assert "NAME_MAP: dict[str, str] = {'conv4-1': 'conv4_1', 'conv4-2': 'conv4_2'}" in source
    assert "self.conv1 = nn.Conv(10, (3, 3)" in source and "self.PReLU1 = ChannelPReLU((10,))" in source
    assert "# pool1 (Pooling): conv1 (1, 10, 10, 10) -> pool1 (1, 10, 5, 5)" in source
    assert "def load_variables(" in source and "def load_model(" in source
    data = (tmp_path / "m" / "weights.msgpack").read_bytes()
    variables = msgpack_restore(data)
    assert msgpack_serialize(variables) == data  # byte for byte what Flax itself writes for these variables
    assert set(variables) == {"params", "batch_stats"}
    weighted = {layer.name.replace("-", "_") for layer in net.layers if layer.blobs}
    assert set(variables["params"]) == weighted
    converted = caffeport.transform(net, "torch")
    caffe_kernel = np.asarray(next(la for la in converted.layers if la.name == "conv1").blobs[0])
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"], caffe_kernel.transpose(2, 3, 1, 0))
    assert variables["params"]["PReLU1"]["negative_slope"].shape == (10,)
    readme = (tmp_path / "m" / "README.md").read_text()
    assert "load_model()" in readme and "(module, variables)" in readme and "module.apply" in readme


def test_yunet_with_its_detection_output_matches_the_reference_on_a_photo(tmp_path: Path) -> None:
    """yunet whole: PriorBox a constant, DetectionOutput the file's `caffe_detection_output` (numpy, so the model runs
    without jax.jit, as its docstring and README say); on the astronaut photo every top, the detection rows
    included, equals the reference's (the face found, ids and labels exact)."""
    from tests.onnx.test_onnx_ssd import assert_rows_equal, astronaut

    net, result = _generate(YUNET, tmp_path / "model")
    assert not [w for w in result.warnings if "flax-code" in w]  # nothing stubbed
    (head,) = [layer for layer in net.layers if layer.type == "DetectionOutput"]
    source = (tmp_path / "model" / "model.py").read_text()
    assert "PriorBoxes(" in source and "caffe_detection_output(" in source and "NotGenerated" not in source
    assert "without jax.jit" in (tmp_path / "model" / "README.md").read_text()
    inputs = {"data": astronaut()}
    ((got, plain),) = run_flax_generated([(tmp_path / "model", inputs, list(net.inputs))])
    key = f"{head.name}/{head.tops[0]}"
    want = caffeport.run(net, inputs, all_layers=True)
    assert want[key].shape[2] > 0 and want[key][0, 0, 0, 1] != -1  # a real detection to compare
    assert_rows_equal(got.pop(key), want[key])
    assert_rows_equal(got.pop(head.tops[0]), want[key])  # the net's output, as the plain call returns it
    assert compare_with_reference(net, got, plain, inputs, skip={head.name}) >= len(net.layers) - 1


def test_yunet_detection_output_keeps_caffes_order_among_tied_scores(tmp_path: Path) -> None:
    """A black image: every box scores exactly 0.5 (34 kept), so the rows' order is the stable sort's and NMS's
    among ties; equal to the reference's, row for row. (The -1 rows of no detection: the layer tests.)"""
    net, _ = _generate(YUNET, tmp_path / "model")
    (head,) = [layer for layer in net.layers if layer.type == "DetectionOutput"]
    key = f"{head.name}/{head.tops[0]}"
    inputs = {"data": np.zeros(net.inputs["data"], np.float32)}
    ((got, _),) = run_flax_generated([(tmp_path / "model", inputs, list(net.inputs))])
    want = caffeport.run(net, inputs, all_layers=True)[key]
    assert want.shape[2] > 1 and np.all(want[0, 0, :, 2] == 0.5)
    np.testing.assert_array_equal(got[key], want)


def test_a_layer_without_flax_code_is_a_stub_naming_it_with_its_blobs_kept(tmp_path: Path) -> None:
    """Caffe's RNN is not generated (LSTM is): listed in the warnings and the README, a ``NotGenerated`` submodule
    raising NotImplementedError with the layer's name, type and params, its blobs (and those of the output layer
    the backend split off it) in weights.msgpack as the backend holds them; the InnerProduct after it is code."""
    from flax.serialization import msgpack_restore

    from tests.codegen.test_keras_code_output import RNN_STUB
    from tests.codegen.test_torch_code_layers import build

    model, proto = build(tmp_path, *RNN_STUB)
    result = caffeport.convert(model, proto, tmp_path / "m", format="flax-code")
    (stub,) = [w for w in result.warnings if "flax-code" in w]
    assert "'rnn' (RNN)" in stub and "1 layer(s)" in stub
    ruff_check(tmp_path / "m" / "model.py")
    assert "self.ip = nn.Dense(3" in (tmp_path / "m" / "model.py").read_text()
    assert "'rnn' (RNN)" in (tmp_path / "m" / "README.md").read_text()
    variables = msgpack_restore((tmp_path / "m" / "weights.msgpack").read_bytes())
    net = caffeport.transform(caffeport.read(model, proto), "torch")
    split = [layer for layer in net.layers if layer.type in ("RNN", "RNNOutput")]
    assert [layer.name for layer in split] == ["rnn", "rnn_output"]
    for layer in split:
        kept = list(variables["params"][layer.name].values())  # keyed by weight name (msgpack sorts them)
        assert len(kept) == len(layer.blobs) > 0
        for want in layer.blobs:
            want = np.asarray(want, np.float32)
            assert sum(got.shape == want.shape and np.array_equal(got, want) for got in kept) == 1
    net = caffeport.read(model, proto)
    error = run_flax_failure(tmp_path / "m", {k: np.zeros(v, np.float32) for k, v in net.inputs.items()},
                             list(net.inputs))
    assert "NotImplementedError" in error and "'rnn' (RNN)" in error and "recurrent_param" in error


@pytest.mark.parametrize("seed", [0, 1])
def test_recurrent_net_embed_and_lstm_with_cont_restarts_match(seed: int, tmp_path: Path) -> None:
    """e_recurrent (Caffe-written: Embed, LSTM with ``cont`` restarting a stream mid-sequence, InnerProduct over
    axis 2) generated whole and exact, the step loop a ``jax.lax.scan``."""
    from tests.codegen.test_torch_code_models import _recurrent_inputs

    net, result = _generate(RECURRENT, tmp_path / "model")
    assert not [w for w in result.warnings if "flax-code" in w]
    source = (tmp_path / "model" / "model.py").read_text()
    assert "CaffeEmbed(" in source and "CaffeLSTM(" in source and "jax.lax.scan" in source
    inputs = _recurrent_inputs(net, seed)
    ((got, plain),) = run_flax_generated([(tmp_path / "model", inputs, list(net.inputs))])
    assert _compare("e_recurrent", net, got, plain, inputs) >= len(net.layers)


def _pnet_sizes(folder: Path, sizes: list[tuple[int, int]], patch: str = "") -> list[tuple[dict, dict]]:
    """PNet's generated folder run at each size (a copy per size, one interpreter): (got, reference) pairs."""
    net = caffeport.read(*_files(SHARED["mtcnn-det1"]))
    runs, inputs_all = [], []
    for h, w in sizes:
        copy = folder.parent / f"{folder.name}-{h}x{w}"
        shutil.copytree(folder, copy)
        inputs = {"data": np.random.default_rng(2).uniform(-1, 1, size=(2, 3, h, w)).astype(np.float32)}
        runs.append((copy, inputs, ["data"]))
        inputs_all.append(inputs)
    results = run_flax_generated(runs, patch=patch)
    return [(got, caffeport.run(net, inputs, all_layers=True)) for (got, _), inputs in zip(results, inputs_all)]


def test_fully_convolutional_pnet_runs_at_other_sizes(tmp_path: Path) -> None:
    """Pooling sizes are Caffe's rule computed at run time, so PNet works at other input sizes, as in Caffe;
    at 25x25 and 31x47 Caffe's ceil rounding gives pool1 one more row or column than floor rounding would."""
    _generate(SHARED["mtcnn-det1"], tmp_path / "model")
    for got, want in _pnet_sizes(tmp_path / "model", [(25, 25), (31, 47), (12, 13)]):
        assert set(got) == set(want)
        for key in sorted(want):
            assert_close(key, got[key], want[key])


def test_the_comparison_catches_flax_floor_pooling_in_place_of_caffes(tmp_path: Path) -> None:
    """The check can fail: Flax's own ``nn.max_pool(..., padding="VALID")`` (floor rounding) in place of the ceil
    helper agrees with Caffe at 12x12, where conv1's 10x10 pools evenly, and not at 25x25 ((23 - 2) % 2 != 0)."""
    _generate(SHARED["mtcnn-det1"], tmp_path / "model")
    patch = ("def floor_pool(x, method, kernel, stride, pad, ceil=True):\n"
             "    return nn.max_pool(x, kernel, stride, padding='VALID')\n\n\n"
             "caffe_pool = floor_pool\n")
    (even, even_want), (odd, odd_want) = _pnet_sizes(tmp_path / "model", [(12, 12), (25, 25)], patch)
    for key in sorted(even_want):
        assert_close(key, even[key], even_want[key])
    assert_close("conv1/conv1", odd["conv1/conv1"], odd_want["conv1/conv1"])
    with pytest.raises(AssertionError, match=r"pool1/pool1: shape \(2, 10, 11, 11\), expected \(2, 10, 12, 12\)"):
        assert_close("pool1/pool1", odd["pool1/pool1"], odd_want["pool1/pool1"])
    with pytest.raises(AssertionError, match="prob1: shape"):
        assert_close("prob1", odd["prob1"], odd_want["prob1"])


def test_the_comparison_catches_whole_kernel_ave_divisors(tmp_path: Path) -> None:
    """The check can fail: CIFAR-10's AVE pooling with Caffe's sizes but every window divided by the whole kernel
    (``nn.avg_pool`` on the zero-padded input, the usual port) differs from Caffe's clipped last windows."""
    net, _ = _generate(SHARED["cifar10-v2"], tmp_path / "m")
    patch = ("_exact = caffe_pool\n\n\n"
             "def naive(x, method, kernel, stride, pad, ceil=True):\n"
             "    if method == 'MAX':\n"
             "        return _exact(x, method, kernel, stride, pad, ceil)\n"
             "    return nn.avg_pool(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))), kernel, stride)\n\n\n"
             "caffe_pool = naive\n")
    inputs = _inputs(net)
    ((got, _),) = run_flax_generated([(tmp_path / "m", inputs, list(net.inputs))], patch=patch)
    want = caffeport.run(net, inputs, all_layers=True)
    assert_close("pool1/pool1", got["pool1/pool1"], want["pool1/pool1"])
    assert got["pool2/pool2"].shape == want["pool2/pool2"].shape
    with pytest.raises(AssertionError, match="pool2/pool2: relative error"):
        assert_close("pool2/pool2", got["pool2/pool2"], want["pool2/pool2"])


def test_without_input_shapes_nothing_is_written(tmp_path: Path) -> None:
    model, _ = _files(SHARED["mtcnn-det1"])
    with pytest.raises(CaffeportError, match="flax-code needs the net's input shapes"):
        caffeport.convert(model, None, tmp_path / "out", format="flax-code")
    assert list(tmp_path.iterdir()) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *args], capture_output=True, text=True, cwd=ROOT)


def test_verify_flax_on_a_generated_folder(tmp_path: Path) -> None:
    """``convert -f flax-code`` then ``verify --flax`` from the command line: every top matches, exit 0; a model.py
    broken at its softmax axis fails there, exit 1, naming the first diverging layer."""
    model, proto = (str(p) for p in _files(SHARED["mtcnn-det1"]))
    out = tmp_path / "pnet"
    done = _cli("convert", model, "-p", proto, "-f", "flax-code", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == FILES
    done = _cli("verify", model, "-p", proto, "--flax", str(out), "--all-layers")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "10 of 10 tensors match within rtol 0.0001" in done.stdout
    assert "prob1 (output)" in done.stdout and "PReLU1/conv1" in done.stdout
    source = (out / "model.py").read_text()
    broken = source.replace("jax.nn.softmax(conv4_1, axis=3)", "jax.nn.softmax(conv4_1, axis=0)")
    assert broken != source
    (out / "model.py").write_text(broken)
    done = _cli("verify", model, "-p", proto, "--flax", f"{out}:load_model", "--all-layers")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout and "first divergence: layer prob1 (type Softmax)" in done.stdout
    done = _cli("verify", model, "-p", proto, "--flax", str(tmp_path))
    assert done.returncode == 1 and "has no model.py" in done.stderr and "Traceback" not in done.stderr


def test_verify_flax_runs_a_detection_output_model_without_jit(tmp_path: Path) -> None:
    """yunet's generated module cannot run under jax.jit (its rows depend on the values): ``verify --flax`` runs
    it without jit and compares every top, the detections on the astronaut photo included."""
    model, proto = (str(p) for p in _files(YUNET))
    out = tmp_path / "yunet"
    caffeport.convert(model, proto, out, format="flax-code")
    from tests.onnx.test_onnx_ssd import IMAGES

    image = str(IMAGES / "astronaut.png")
    done = _cli("verify", model, "-p", proto, "--flax", str(out), "--image", image, "--all-layers")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "detection_out (output)" in done.stdout and "FAIL" not in done.stdout
    assert "not exposed" not in done.stdout
