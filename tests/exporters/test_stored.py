"""The one dtype rule every array format writes by (`caffeport.exporters.stored.written_dtype`)."""

from __future__ import annotations

import numpy as np
import pytest

from caffeport.errors import ModelStructureError
from caffeport.exporters.stored import written_dtype
from caffeport.ir import Layer


@pytest.mark.parametrize(("dtype", "target", "want"), [
    (">f4", None, "<f4"), ("<f2", None, "<f2"), ("<f8", None, "<f8"), ("<f2", "Conv2D", "<f4"),
    ("<f8", "Conv2D", "<f8"), (">i8", "Dense", "<i8"), ("|b1", "Conv2D", "|b1"),
])
def test_kept_where_no_backend_converted_at_least_float32_where_one_did(dtype: str, target: str | None,
                                                                        want: str) -> None:
    layer = Layer(name="conv", type="Convolution", framework_class=target)
    assert written_dtype(layer, np.zeros(3, dtype)).str == want


def test_a_blob_that_is_not_plain_numbers_is_refused_naming_it() -> None:
    layer = Layer(name="odd", type="Convolution")
    for blob in (np.zeros(2, dtype=[("a", "<f4")]), np.zeros(2, dtype="U3"), np.zeros(2, dtype=object)):
        with pytest.raises(ModelStructureError, match=r"'odd/0' has dtype .* not a plain numeric type") as refused:
            written_dtype(layer, blob, "'odd/0'")
        assert "odd" in str(refused.value)
