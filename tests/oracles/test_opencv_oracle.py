"""`caffeport.run` against OpenCV 4's Caffe runtime, layer by layer, on every shared model OpenCV runs.

OpenCV (``cv2.dnn.readNetFromCaffe``, fusion off, the plain OpenCV CPU
backend) is an implementation of Caffe's layers written apart from Caffe and
from caffeport. Each model gets a deterministic input (the photo, resized and
normalised as that model's own demo feeds it, or seeded random in the same
range) and every top of every layer is compared at 1e-4 relative
(``max |got - want| / max |want|``). How layers are matched between the two,
and why the mapping is one to one: `tests.oracles.opencv_helpers`.

OpenCV is a dependency of the ``test`` extra: without it these tests fail,
they do not skip. Where OpenCV is known not to compute what Caffe computes,
the model's ``deviations`` say why (Caffe's source decides) and check
caffeport the Caffe way instead; no layer is left out silently.

The opencv-dnn-layers models (``.npy``, written by pycaffe) and four
caffe-reference models (``outputs_per_layer.npz``, BVLC Caffe 1.0) also hold
Caffe's own outputs for their input: caffeport is compared with those
directly too, and so is OpenCV, which checks the oracle itself. The other two
caffe-reference models use layers OpenCV lacks (Bias, Embed):
`test_opencv_still_cannot_run` keeps that claim true.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import caffeport
from tests.conftest import models_dir
from tests.oracles.opencv_helpers import (
    FACE_BOX,
    MODELS,
    NOT_RUN_BY_OPENCV,
    RTOL,
    caffe_reference,
    compare_layer,
    compare_with_caffe,
    compare_with_opencv,
    cv2_module,
    format_results,
    layer_tops,
    model_paths,
    opencv_forward,
    opencv_net,
    photo_bgr,
    reference_input,
)

WITH_CAFFE_OUTPUTS = [name for name, model in MODELS.items() if model.caffe_outputs or model.caffe_per_layer]


def test_opencv_4_is_installed() -> None:
    cv2 = cv2_module()
    assert cv2.__version__.split(".")[0] == "4", f"the oracle is OpenCV 4's Caffe runtime; found {cv2.__version__}"


@pytest.mark.parametrize("name", MODELS)
def test_caffeport_run_matches_opencv_per_layer(name: str) -> None:
    model = MODELS[name]
    cv2_module()
    net = caffeport.read(*model_paths(model))
    inputs = model.make_inputs(net)
    got = caffeport.run(net, inputs, all_layers=True)
    results = compare_with_opencv(model, net, got, inputs)
    assert results, f"{name}: no layer compared"
    failed = [r for r in results if not r.ok]
    assert not failed, (f"{name}: {len(failed)} of {len(results)} tops differ from OpenCV by more than {RTOL:g} "
                        f"relative:\n{format_results(failed)}\n\nall tops:\n{format_results(results)}")


@pytest.mark.parametrize("name", WITH_CAFFE_OUTPUTS)
def test_caffeport_run_matches_caffes_own_outputs(name: str) -> None:
    model = MODELS[name]
    net = caffeport.read(*model_paths(model))
    got = caffeport.run(net, model.make_inputs(net), all_layers=True)
    results = compare_with_caffe(model, net, got)
    assert results and all(r.ok for r in results), f"{name} against Caffe's outputs:\n{format_results(results)}"


@pytest.mark.parametrize("name", WITH_CAFFE_OUTPUTS)
def test_the_oracle_itself_reproduces_caffe(name: str) -> None:
    """OpenCV against Caffe's own outputs: if this fails, OpenCV is no oracle for that layer type."""
    model = MODELS[name]
    net = caffeport.read(*model_paths(model))
    inputs = model.make_inputs(net)
    keys = layer_tops(net)
    theirs = opencv_forward(model, inputs, {layer: len(net.layer(layer).tops) for layer, _, _ in keys.values()})
    want = caffe_reference(model)
    compared = 0
    for key, (layer, index, type_) in keys.items():
        if key in want:
            result = compare_layer(key, type_, theirs[f"{layer}/{index}"], want[key])
            assert result.ok, f"OpenCV's {key} is not Caffe's: {result.problem}"
            compared += 1
    assert compared, f"{name}: no layer compared"


@pytest.mark.parametrize("name", ["hyperlpr-finemapping-fp16", "hyperlpr-segfree-fp16"])
def test_opencv_reads_fp16_weights_as_caffeport_does(name: str) -> None:
    """NVCaffe's FLOAT16 ``raw_data`` blobs: OpenCV widens them to float32 itself, bit for bit as caffeport reads them.

    So the fp16 models are compared with OpenCV directly (same weights on both
    sides), not through the fp32 model at a tolerance for fp16 rounding.
    """
    model = MODELS[name]
    net = caffeport.read(*model_paths(model))
    cv_net = opencv_net(model)
    halves = 0
    for layer in net.layers:
        for i, blob in enumerate(layer.blobs):
            mine = np.asarray(blob)
            halves += mine.dtype == np.float16
            theirs = np.asarray(cv_net.getParam(layer.name, i))
            assert theirs.size == mine.size, f"{layer.name} blob {i}: OpenCV {theirs.shape}, caffeport {mine.shape}"
            assert np.array_equal(theirs.reshape(-1), mine.astype(np.float32).reshape(-1)), (
                f"{layer.name} blob {i}: OpenCV's weights differ from caffeport's")
    assert halves, f"{name}: no float16 blob found, so this test shows nothing"


def test_the_inputs_are_what_the_models_expect() -> None:
    """The preprocessing is right when the nets do their job on it (OpenCV alone, independent of caffeport).

    MTCNN's P/R/O-Nets call the face crop a face and the random image not; YuNet
    (raw BGR 0..255) finds the one face in the photo, inside the face's box.
    """
    for name, face_output in [("mtcnn-det1", "prob1"), ("mtcnn-det2", "prob1"), ("mtcnn-det3", "prob1")]:
        model = MODELS[name]
        net = caffeport.read(*model_paths(model))
        probabilities = opencv_forward(model, model.make_inputs(net), {face_output: 1})[f"{face_output}/0"]
        face, noise = probabilities.reshape(2, 2)[:, 1]
        assert face > 0.9 > 0.1 > noise, f"{name}: face probability {face:.3f} on the face, {noise:.3f} on noise"

    model = MODELS["yunet"]
    net = caffeport.read(*model_paths(model))
    detections = opencv_forward(model, model.make_inputs(net), {"detection_out": 1})["detection_out/0"].reshape(-1, 7)
    best = detections[np.argmax(detections[:, 2])]
    height, width = photo_bgr().shape[:2]
    x0, y0, x1, y1 = best[3:] * [width, height, width, height]
    fx0, fy0, fx1, fy1 = FACE_BOX
    inter = max(0.0, min(x1, fx1) - max(x0, fx0)) * max(0.0, min(y1, fy1) - max(y0, fy0))
    union = (x1 - x0) * (y1 - y0) + (fx1 - fx0) * (fy1 - fy0) - inter
    assert best[2] > 0.9 and inter / union > 0.4, f"YuNet's best detection {best} is not the face {FACE_BOX}"


@pytest.mark.parametrize("name", NOT_RUN_BY_OPENCV)
def test_opencv_still_cannot_run(name: str) -> None:
    """The shared models left out of the OpenCV comparison, each for the reason given; if OpenCV learns the layer,
    this fails and the model belongs in MODELS."""
    cv2 = cv2_module()
    prototxt, caffemodel, reason = NOT_RUN_BY_OPENCV[name]
    root = models_dir()
    inputs = reference_input(name)(caffeport.read(root / caffemodel, root / prototxt))
    net = cv2.dnn.readNetFromCaffe(str(root / prototxt), str(root / caffemodel))
    for blob, value in inputs.items():
        net.setInput(value, blob)
    with pytest.raises(cv2.error, match=re.escape(reason)):
        net.forward()
