"""InnerProduct on a weight that is not aligned (as blobs mapped from a caffemodel are): block by block, same result."""

from __future__ import annotations

import numpy as np
import pytest

from caffeport.layers import inner_product
from caffeport.layers.inner_product import aligned_product


def _unaligned(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 at an odd byte address, like a packed protobuf field in a memory map."""
    raw = np.zeros(values.size * 4 + 1, np.uint8)
    view = np.frombuffer(raw.data, dtype=np.float32, count=values.size, offset=1).reshape(values.shape)
    raw[1:] = np.frombuffer(values.astype(np.float32).tobytes(), np.uint8)
    assert not view.flags.aligned
    return view


@pytest.mark.parametrize("transpose", [False, True])
def test_unaligned_weight_in_blocks_matches_a_float64_product(monkeypatch: pytest.MonkeyPatch, transpose: bool) -> None:
    monkeypatch.setattr(inner_product, "BLOCK_BYTES", 7 * 4 * 37)  # 7 rows of 37 values: several uneven blocks
    rng = np.random.default_rng(0)
    m, k, n = 3, 37 if not transpose else 29, 29 if not transpose else 37
    x = rng.standard_normal((m, k)).astype(np.float32)
    stored = rng.standard_normal((k, n) if transpose else (n, k)).astype(np.float32)
    want = x.astype(np.float64) @ (stored.astype(np.float64) if transpose else stored.astype(np.float64).T)
    got = aligned_product(x, _unaligned(stored), transpose=transpose, n=n, k=k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aligned_product(x, stored, transpose=transpose, n=n, k=k), want, rtol=1e-5, atol=1e-5)


def test_fp16_and_legacy_4d_weights() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5)).astype(np.float32)
    stored = rng.standard_normal((1, 1, 4, 5)).astype(np.float16)  # V1 legacy dims, NVIDIA Caffe half storage
    want = x.astype(np.float64) @ stored.reshape(4, 5).astype(np.float64).T
    np.testing.assert_allclose(aligned_product(x, stored, transpose=False, n=4, k=5), want, rtol=1e-5, atol=1e-5)
