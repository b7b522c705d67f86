"""Passes are linear in the number of layers, and Dense layers fed by Dense layers are not flagged.

The first two tests used to run for minutes (a scan of the rest of the net per
BatchNorm, per InnerProduct): each now counts the lookups a pass makes, which a
quadratic pass would multiply, instead of timing a loaded machine.
"""

from __future__ import annotations

import numpy as np
import pytest

from caffeport.ir import Layer, Net
from caffeport.transforms import common, transform

LAYERS = 20_000


def _count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count how many layers the index visits while it is built and queried."""
    visited = [0]
    original = common.BlobIndex.__init__

    def counting(self: common.BlobIndex, net: Net) -> None:
        visited[0] += len(net.layers)
        original(self, net)

    monkeypatch.setattr(common.BlobIndex, "__init__", counting)
    return visited


def test_many_batchnorms_whose_outputs_nobody_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    visited = _count_lookups(monkeypatch)
    one = np.ones(2, np.float32)
    layers = [Layer(f"bn{i}", "BatchNorm", ["x"], [f"y{i}"], blobs=[one, one, np.ones(1, np.float32)],
                    bottom_shapes=[(1, 2)]) for i in range(LAYERS)]
    out = transform(Net(layers=layers, inputs={"x": (1, 2)}), "tensorflow")
    assert sum(1 for layer in out.layers if layer.framework_class == "BatchNormalization") == LAYERS
    assert visited[0] <= 4 * LAYERS  # each pass indexes the net once


def test_many_inner_products_after_one_flatten(monkeypatch: pytest.MonkeyPatch) -> None:
    visited = _count_lookups(monkeypatch)
    flatten = Layer("flat", "Flatten", ["x"], ["f"], bottom_shapes=[(1, 2, 2, 2)], top_shapes=[(1, 8)])
    ips = [Layer(f"ip{i}", "InnerProduct", ["f"], [f"y{i}"], params={"inner_product_param": {"num_output": 1,
                 "bias_term": False}}, blobs=[np.ones((1, 8), np.float32)], bottom_shapes=[(1, 8)])
           for i in range(LAYERS)]
    out = transform(Net(layers=[flatten, *ips], inputs={"x": (1, 2, 2, 2)}), "tensorflow")
    assert sum(1 for entry in out.report if entry.action == "flatten-reorder") == LAYERS
    assert visited[0] <= 4 * (LAYERS + 1)


def test_a_dense_layer_fed_by_a_dense_layer_needs_no_reorder_and_no_warning() -> None:
    """refinenet-style heads: ip1 -> ReLU -> ip2 with unknown shapes (a caffemodel alone) never need a reorder."""
    ip = {"num_output": 3, "bias_term": False}
    layers = [
        Layer("ip1", "InnerProduct", ["data"], ["a"], params={"inner_product_param": ip},
              blobs=[np.ones((3, 12), np.float32)], bottom_shapes=[None]),
        Layer("relu", "ReLU", ["a"], ["a"], bottom_shapes=[None]),
        Layer("ip2", "InnerProduct", ["a"], ["b"], params={"inner_product_param": ip},
              blobs=[np.arange(9, dtype=np.float32).reshape(3, 3)], bottom_shapes=[None]),
    ]
    out = transform(Net(layers=layers), "tensorflow")
    assert [w for w in out.warnings if "'ip2'" in w] == []
    assert [w for w in out.warnings if "'ip1'" in w]  # its own input is unknown: that warning stays
    np.testing.assert_array_equal(out.layer("ip2").blobs[0], np.arange(9, dtype=np.float32).reshape(3, 3).T)
