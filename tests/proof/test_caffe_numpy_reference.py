"""The numpy Caffe forward of reference_nets.py against Caffe's own outputs.

The Keras and PyTorch MTCNN tests use that numpy forward as their ground truth
(MTCNN comes without Caffe outputs), so it has to reproduce BVLC Caffe first:
every per-layer output of every caffe-reference model, at the same tolerance.
"""

from __future__ import annotations

import pytest

import caffeport
from tests.proof.reference_nets import (
    REFERENCE_MODELS,
    add_split_copies,
    assert_all_close,
    caffe_forward,
    model_files,
    reference_inputs,
    reference_outputs,
)


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_numpy_forward_reproduces_caffe(name: str) -> None:
    caffemodel, prototxt = model_files(name)
    net = caffeport.read(caffemodel, prototxt)
    expected = reference_outputs(name)
    got = caffe_forward(net, reference_inputs(name))
    add_split_copies(got, expected)
    assert_all_close(got, expected)
