"""A second runtime: OpenCV 4's ONNX importer runs the exports and agrees with the reference on the net outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import caffeport
from caffeport.onnx import to_onnx
from tests.conftest import models_dir
from tests.proof.reference_nets import assert_close

MODELS = {
    "det1": ("mtcnn/det1.caffemodel", "mtcnn/det1.prototxt"),
    "det4": ("mtcnn/det4.caffemodel", "mtcnn/det4.prototxt"),
    "resnet50-head-bn": ("resnet50-head-bn/test.caffemodel", "resnet50-head-bn/test.prototxt"),
    "ultraface": ("ultraface-rfb320/RFB-320.caffemodel", "ultraface-rfb320/RFB-320.prototxt"),
    "b_resnet_block": ("caffe-reference/b_resnet_block/b_resnet_block.caffemodel",
                       "caffe-reference/b_resnet_block/deploy.prototxt"),
    "c_deconv_prelu": ("caffe-reference/c_deconv_prelu/c_deconv_prelu.caffemodel",
                       "caffe-reference/c_deconv_prelu/deploy.prototxt"),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_opencv_runs_the_export(name: str) -> None:
    model_file, proto = MODELS[name]
    net = caffeport.read(models_dir() / model_file, models_dir() / proto)
    model = to_onnx(net)
    cv_net = cv2.dnn.readNetFromONNX(np.frombuffer(model.SerializeToString(), np.uint8))
    rng = np.random.default_rng(0)
    inputs = {k: rng.uniform(-1, 1, size=s).astype(np.float32) for k, s in net.inputs.items()}
    for key, value in inputs.items():
        cv_net.setInput(value, key)
    outputs = [o.name for o in model.graph.output]
    got = cv_net.forward(outputs)
    want = caffeport.run(net, inputs)
    for output, value in zip(outputs, got, strict=True):
        assert_close(output, np.asarray(value).reshape(want[output].shape), want[output])
