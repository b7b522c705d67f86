"""Regressions of the structure-aware fuzz campaign (issue 14, ``benchmarks/fuzz.py --engine structure``).

Each test builds the net the campaign found (an Input of 1x3x4x4, the layer with one absurd parameter value, as
a prototxt and, where the layer has weights, a caffemodel) and checks the clean outcome: a correct result where
Caffe computes one, else a `CaffeportError` naming the file and the layer, exit 1 with one line from the CLI and
nothing left behind.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import CaffeportError, ShapeInferenceError
from caffeport.exporters.caffe import encode_message
from caffeport.layers.shapes import MAX_BLOB_COUNT, infer_shapes
from tests.hostile.hostile_helpers import hang_guard
from tests.protowriter import blob, ld, string

FLT_MAX = float(np.finfo(np.float32).max)
INPUT = """name: "fuzz"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }
"""


def _prototxt(tmp_path: Path, layer: str, *, consumer: bool = True) -> Path:
    text = INPUT + f"layer {{ name: \"probe\" bottom: \"data\" top: \"probe\" {layer} }}\n"
    if consumer:
        text += 'layer { name: "consumer" type: "ReLU" bottom: "probe" top: "out" }\n'
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def _caffemodel(tmp_path: Path, type_: str, blobs: list[np.ndarray], param: tuple[int, str, dict] | None = None,
                name: bytes = b"probe") -> Path:
    """A V2 caffemodel: the Input, then layer ``name`` of ``type_`` with ``blobs`` (and its ``*_param``)."""
    shape = encode_message("BlobShape", {"dim": [1, 3, 4, 4]})
    net = string(1, "fuzz") + ld(100, string(1, "input") + string(2, "Input") + string(4, "data")
                                 + ld(143, ld(1, shape)))
    body = ld(1, name) + string(2, type_) + string(3, "data") + ld(4, name)
    body += b"".join(ld(7, blob(b)) for b in blobs)
    if param is not None:
        number, message, values = param
        body += ld(number, encode_message(message, values))
    path = tmp_path / "net.caffemodel"
    path.write_bytes(net + ld(100, body))
    return path


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "caffeport", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def _assert_clean_cli_error(result: subprocess.CompletedProcess[str], named: Path, out_dir: Path) -> str:
    """Exit 1, one line naming ``named``, no traceback, nothing written into ``out_dir``."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"caffeport: error: {named}: "), lines[0]
    assert sorted(p.name for p in out_dir.iterdir()) == [], "an output was left behind"
    return lines[0]


def _caffe_pool(x: np.ndarray, method: str, k: int, stride: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """Caffe's CPU pooling loop (``PoolingLayer::Forward_cpu``, no padding), written out plainly."""
    n, c, height, width = x.shape
    top = np.empty((n, c, *out), np.float32)
    for ph in range(out[0]):
        for pw in range(out[1]):
            hstart, wstart = ph * stride[0], pw * stride[1]
            hend, wend = min(hstart + k, height), min(wstart + k, width)
            pool_size = (hend - hstart) * (wend - wstart)
            window = x[:, :, hstart:hend, wstart:wend].reshape(n, c, -1)
            if method == "MAX":
                top[:, :, ph, pw] = np.maximum(window.max(axis=2, initial=-FLT_MAX), -FLT_MAX)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    top[:, :, ph, pw] = window.sum(axis=2) / np.float32(pool_size)
    return top


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_with_a_stride_past_the_image_pools_without_a_stride_long_canvas(tmp_path: Path,
                                                                                 method: str) -> None:
    # found: the canvas reached the last window's start, 2^31 rows: 96 GiB for a 4x4 input (MemoryError)
    proto = _prototxt(tmp_path, f'type: "Pooling" pooling_param {{ pool: {method} kernel_size: 2 '
                                'stride_h: 2147483648 stride_w: 2 }')
    net = caffeport.read(None, proto)
    assert net.layers[1].top_shapes == [(1, 3, 2, 2)]  # ceil((4 - 2) / 2^31) + 1 = 2 rows, as Caffe shapes it
    x = np.random.default_rng(14).uniform(-1, 1, (1, 3, 4, 4)).astype(np.float32)
    with hang_guard():
        top = caffeport.run(net, {"data": x}, all_layers=True)["probe/probe"]
    # the second row of windows starts at row 2^31, past the image: Caffe's loop over it adds nothing
    past = np.full((1, 3, 1, 2), -FLT_MAX if method == "MAX" else 0.0, np.float32)
    np.testing.assert_array_equal(top, np.concatenate([_caffe_pool(x, method, 2, (2, 2), (1, 2)), past], axis=2))


@pytest.mark.parametrize(("layer", "what"), [
    ('type: "Tile" tile_param { tiles: 2147483647 }', "Tile of 2^31 - 1 tiles"),
    ('type: "Upsample" upsample_param { scale: 4294967295 }', "Upsample by 2^32 - 1"),
])
def test_a_top_beyond_caffes_blob_limit_is_refused_before_any_forward(tmp_path: Path, layer: str,
                                                                      what: str) -> None:
    # found: MemoryError / OverflowError in the forwards (tile.py, upsample.py:132) allocating what the params say
    proto = _prototxt(tmp_path, layer)
    net = caffeport.read(None, proto)
    x = np.zeros((1, 3, 4, 4), np.float32)
    assert net.layers[1].top_shapes == [None]  # lenient read: the rule's complaint is a warning
    assert any("Caffe allows in a blob" in w for w in net.warnings), net.warnings
    with pytest.raises(ShapeInferenceError) as caught, hang_guard():
        caffeport.run(net, {"data": x})
    assert caught.value.layer == "probe" and caught.value.path == str(proto)
    assert f"{MAX_BLOB_COUNT:,}" in str(caught.value)


def test_infer_shapes_checks_every_top_against_caffes_blob_limit(tmp_path: Path) -> None:
    proto = _prototxt(tmp_path, 'type: "Tile" tile_param { axis: 1 tiles: 44739243 }')  # 48 * 44739243 > 2^31 - 1
    net = caffeport.read(None, proto)
    with pytest.raises(ShapeInferenceError, match=r"2,147,483,664 values"):
        infer_shapes(net, strict=True)
    ok = caffeport.read(None, _prototxt(tmp_path, 'type: "Tile" tile_param { axis: 1 tiles: 44739242 }'))
    assert ok.layers[1].top_shapes == [(1, 3 * 44739242, 4, 4)]  # 2,147,483,616 values: within the limit


def test_a_convolution_padding_of_2_to_the_31_is_a_clean_error_from_run(tmp_path: Path) -> None:
    # found: MemoryError in im2col (convolution.py:78) for a 4x4 input padded by 2^31 on each side
    proto = _prototxt(tmp_path, 'type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 '
                                'pad_h: 0 pad_w: 2147483648 }')
    model = _caffemodel(tmp_path, "Convolution", [np.ones((2, 3, 3, 3), np.float32), np.ones(2, np.float32)])
    out = tmp_path / "out"
    out.mkdir()
    line = _assert_clean_cli_error(_cli("run", model, "-p", proto, "--random", "0", "-o", out / "r.npz"), proto, out)
    assert "layer 'probe'" in line and "Caffe allows in a blob" in line


@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution", "DepthwiseConvolution"])
def test_group_zero_is_refused_naming_the_layer_not_a_division_by_zero(tmp_path: Path, type_: str) -> None:
    # found: ZeroDivisionError in weight_shape (convolution.py:212, deconvolution.py:65) from inspect, run, convert
    proto = _prototxt(tmp_path, f'type: "{type_}" convolution_param {{ num_output: 3 kernel_size: 2 group: 0 }}')
    weight = np.ones((3, 3, 2, 2), np.float32)
    model = _caffemodel(tmp_path, type_, [weight, np.ones(3, np.float32)])
    net = caffeport.read(model, proto)  # inspect's read: the blob check says why instead of crashing
    problems = caffeport.layers.blobs.blob_problems(net)
    assert "group must be positive, got 0" in problems["probe"]
    out = tmp_path / "out"
    out.mkdir()
    for args in (["run", model, "-p", proto, "--random", "0", "-o", out / "r.npz"],
                 ["convert", model, "-p", proto, "-f", "npz", "-o", out / "w.npz"]):
        _assert_clean_cli_error(_cli(*args), model, out)  # the blob check names the weights file
    inspected = _cli("inspect", model, "-p", proto)
    assert inspected.returncode == 1 and "Traceback" not in inspected.stderr
    assert "group must be positive, got 0" in inspected.stdout


def test_prior_box_aspect_ratio_zero_gives_caffes_infinite_boxes(tmp_path: Path) -> None:
    # found: ZeroDivisionError (prior_box.py:51) from the flipped ratio 1/0; Caffe computes 1./0 = inf
    text = INPUT.replace("dim: 4 dim: 4", "dim: 8 dim: 8") + (
        'layer { name: "feature" type: "Pooling" bottom: "data" top: "feature" '
        'pooling_param { pool: MAX kernel_size: 4 stride: 4 } }\n'
        'layer { name: "probe" type: "PriorBox" bottom: "feature" bottom: "data" top: "probe" '
        'prior_box_param { min_size: 2 aspect_ratio: 0 flip: true clip: false } }\n')
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    net = caffeport.read(None, proto)
    # priors per cell: ratios 1, 0 and 1/0 = inf; 2x2 cells
    assert net.layers[2].top_shapes == [(1, 2, 2 * 2 * 3 * 4)]
    with hang_guard():
        priors = caffeport.run(net, {"data": np.zeros((1, 3, 8, 8), np.float32)})["probe"]
    boxes = priors[0, 0].reshape(2, 2, 3, 4)
    # ratio 0: width min_size * sqrt(0) = 0, height 2 / 0 = inf; corners normalised by the 8x8 image
    center = np.float32(0.5 * 4 / 8)  # cell (0, 0): (0 + 0.5) * step 4, over the image width 8
    assert boxes[0, 0, 1, 0] == boxes[0, 0, 1, 2] == center  # zero width: both x corners at the center
    assert boxes[0, 0, 1, 1] == -np.inf and boxes[0, 0, 1, 3] == np.inf
    assert np.isfinite(boxes[:, :, 0]).all()  # the square prior is unaffected


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_prior_box_sizes_that_are_not_finite_positive_numbers_are_refused(tmp_path: Path, value: str) -> None:
    # found: OverflowError (prior_box.py:59) casting min_size/max_size inf to int, as Caffe's int cast cannot
    proto = _prototxt(tmp_path, f'type: "PriorBox" prior_box_param {{ min_size: 2 max_size: {value} }}',
                      consumer=False)
    with pytest.raises(ShapeInferenceError, match="must be positive and finite") as caught:
        infer_shapes(caffeport.read(None, proto), strict=True)
    assert caught.value.layer == "probe"


@pytest.mark.parametrize("layer", [
    'type: "Tile" tile_param { axis: -2147483648 tiles: 2 }',
    'type: "Eltwise" bottom: "data" eltwise_param { coeff: -1 }',
    'type: "Silence"',
])
def test_run_errors_from_a_layer_name_the_file(tmp_path: Path, layer: str) -> None:
    # found: the one line said "layer 'probe': ..." but not which file (forward.py raised without a path)
    if 'type: "Silence"' in layer:
        proto = tmp_path / "net.prototxt"
        proto.write_text(INPUT + 'layer { name: "probe" type: "Silence" bottom: "data" top: "probe" }\n')
    else:
        proto = _prototxt(tmp_path, layer)
    model = _caffemodel(tmp_path, "ReLU", [], name=b"unrelated")
    out = tmp_path / "out"
    out.mkdir()
    line = _assert_clean_cli_error(_cli("run", model, "-p", proto, "--random", "0", "-o", out / "r.npz"), proto, out)
    assert "layer 'probe'" in line


def test_convert_errors_from_a_layout_pass_and_an_exporter_name_the_file(tmp_path: Path) -> None:
    # found: "layer 'probe': ConvolutionDepthwise weight of shape (4, 1) has no spatial axes" named no file
    proto = _prototxt(tmp_path, 'type: "ConvolutionDepthwise" convolution_param { num_output: 4 kernel_size: 1 '
                                'axis: -1 }')
    model = _caffemodel(tmp_path, "ConvolutionDepthwise", [np.ones((4, 1), np.float32), np.ones(4, np.float32)])
    out = tmp_path / "out"
    out.mkdir()
    net = caffeport.read(model, proto)
    assert not caffeport.layers.blobs.blob_problems(net)  # the blobs fit: the Keras layout pass is what refuses
    line = _assert_clean_cli_error(_cli("convert", model, "-p", proto, "-o", out / "w.h5"), proto, out)
    assert "layer 'probe'" in line and "spatial axes" in line
    # an exporter's refusal: a 64 KiB layer name is longer than a zip member name may be
    long_name = b"n" * 65536
    proto.write_text(INPUT + f'layer {{ name: "{long_name.decode()}" type: "PReLU" bottom: "data" top: "p" }}\n')
    model = _caffemodel(tmp_path, "PReLU", [np.ones(3, np.float32)], name=long_name)
    line = _assert_clean_cli_error(_cli("convert", model, "-p", proto, "-f", "npz", "-o", out / "w.npz"), proto,
                                   out)
    assert "zip archive holds names of at most 65,535" in line


def test_naming_file_keeps_a_path_the_error_already_has() -> None:
    from caffeport.readers.files import naming_file

    with pytest.raises(CaffeportError) as caught, naming_file("model.prototxt"):
        raise CaffeportError("bad", path="other.caffemodel", layer="x")
    assert str(caught.value) == "other.caffemodel: layer 'x': bad"
    with pytest.raises(CaffeportError) as caught, naming_file("model.prototxt"):
        raise CaffeportError("bad", layer="x")
    assert str(caught.value) == "model.prototxt: layer 'x': bad" and caught.value.path == "model.prototxt"


def test_run_all_layers_refuses_a_layer_name_no_npz_member_can_hold(tmp_path: Path) -> None:
    long = "L" * 65536
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(INPUT + f'layer {{ name: "{long}" type: "ReLU" bottom: "data" top: "out" }}\n')
    model = _caffemodel(tmp_path, "ReLU", [], name=b"unrelated")
    out = tmp_path / "out.npz"
    done = _cli("run", model, "-p", prototxt, "--random", "0", "--all-layers", "-o", out)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "caffeport: error:" in lines[0] and "net.prototxt" in lines[0], lines
    assert "65,535" in lines[0] and "without --all-layers" in lines[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["net.caffemodel", "net.prototxt"]
    plain = _cli("run", model, "-p", prototxt, "--random", "0", "-o", out)  # the net's outputs alone have short names
    assert plain.returncode == 0, plain.stderr
    with np.load(out) as saved:
        assert saved.files == ["out"]


@pytest.mark.parametrize("layer, top", [("", ""), ("probe", ""), ("", "probe")])
def test_onnx_refuses_an_empty_blob_name_before_building(tmp_path: Path, layer: str, top: str) -> None:
    pytest.importorskip("onnx")
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(INPUT + f'layer {{ name: "{layer}" type: "ReLU" bottom: "data" top: "{top}" }}\n'
                        f'layer {{ name: "after" type: "Sigmoid" bottom: "{top}" top: "out" }}\n')
    model = _caffemodel(tmp_path, "ReLU", [], name=b"unrelated")
    out = tmp_path / "net.onnx"
    done = _cli("convert", model, "-p", prototxt, "-f", "onnx", "-o", out)
    if top:  # an empty layer name alone is fine: ONNX node names may be empty, and the tensors keep Caffe's names
        assert done.returncode == 0, done.stderr
        assert out.exists()
        return
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "caffeport: error:" in lines[0] and "empty name" in lines[0], lines
    assert not out.exists()
