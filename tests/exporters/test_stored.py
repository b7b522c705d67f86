"""The rules every array format writes by: blob names (`blob_names`) and the dtype (`written_dtype`)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from caffeport.errors import ModelStructureError
from caffeport.exporters.stored import blob_names, written_dtype
from caffeport.ir import Layer, Net
from tests.exporters.format_helpers import write_with


@pytest.mark.parametrize(("dtype", "framework_class", "want"), [
    (">f4", "", "<f4"), ("<f2", "", "<f2"), ("<f8", "", "<f8"), ("<f2", "Conv2D", "<f4"),
    ("<f8", "Conv2D", "<f8"), (">i8", "Dense", "<i8"), ("|b1", "Conv2D", "|b1"),
])
def test_kept_where_no_backend_converted_at_least_float32_where_one_did(dtype: str, framework_class: str,
                                                                        want: str) -> None:
    layer = Layer(name="conv", type="Convolution", framework_class=framework_class)
    assert written_dtype(layer, np.zeros(3, dtype)).str == want


def test_a_blob_that_is_not_plain_numbers_is_refused_naming_it() -> None:
    layer = Layer(name="odd", type="Convolution")
    for blob in (np.zeros(2, dtype=[("a", "<f4")]), np.zeros(2, dtype="U3"), np.zeros(2, dtype=object)):
        with pytest.raises(ModelStructureError, match=r"'odd/0' has dtype .* not a plain numeric type") as refused:
            written_dtype(layer, blob, "'odd/0'")
        assert "odd" in str(refused.value)


def test_blob_names_are_the_weight_names_then_indexes() -> None:
    blobs = [np.zeros(1, np.float32)] * 3
    assert blob_names(Layer("l", "Scale", blobs=blobs)) == ["0", "1", "2"]
    assert blob_names(Layer("l", "Scale", blobs=blobs, weight_names=["gamma"])) == ["gamma", "1", "2"]
    assert blob_names(Layer("l", "Scale", blobs=blobs[:1], weight_names=["gamma", "beta"])) == ["gamma"]


def test_a_blob_past_the_weight_names_is_written_under_its_index(tmp_path: Path) -> None:
    """keras-h5 used to name blobs only from the weight names when there were any, and so left a blob past them out."""
    gamma, extra = np.full(3, 2, np.float32), np.full(3, 5, np.float32)
    net = Net(layers=[Layer("sc", "Scale", blobs=[gamma, extra], weight_names=["gamma"], framework_class="Scale")])
    with h5py.File(write_with(net, tmp_path / "w.h5", "keras-h5"), "r") as f:
        assert [n.decode() if isinstance(n, bytes) else n for n in f["sc"].attrs["weight_names"]] == \
            ["sc/gamma:0", "sc/1:0"]
        np.testing.assert_array_equal(f["sc"]["sc/1:0"][()], extra)
    with np.load(write_with(net, tmp_path / "w.npz", "npz")) as npz:
        assert sorted(name for name in npz.files if name.startswith("sc/")) == ["sc/1", "sc/gamma"]
        np.testing.assert_array_equal(npz["sc/1"], extra)
