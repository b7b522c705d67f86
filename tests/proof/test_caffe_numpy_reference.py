"""`caffeport.run`, the reference forward, against Caffe's own outputs.

Every per-layer output of every caffe-reference model (written by BVLC Caffe
1.0 with its own forward outputs), at the proof tests' tolerance. The Keras
and PyTorch proof tests then use `caffeport.run` as their ground truth where
a model comes without Caffe's outputs (MTCNN).
"""

from __future__ import annotations

import pytest

import caffeport
from tests.proof.reference_nets import (
    REFERENCE_MODELS,
    add_split_copies,
    assert_all_close,
    model_files,
    reference_inputs,
    reference_outputs,
)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_reference_forward_reproduces_caffe(name: str) -> None:
    caffemodel, prototxt = model_files(name)
    net = caffeport.read(caffemodel, prototxt)
    expected = reference_outputs(name)
    outputs = caffeport.run(net, reference_inputs(name), all_layers=True)
    got = {key.replace("/", "__", 1): value for key, value in outputs.items() if "/" in key}
    add_split_copies(got, expected)
    assert_all_close(got, expected)
