"""Streaming blocks give exactly the simple path's bytes, for every kind of view transforms make."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.io import mapped
from caffeport.streaming import blocks, tiled_transpose
from caffeport.streaming.blocks import Reshaped, iter_chunks, iter_placed, prefetched
from caffeport.transforms import transform
from tests.conftest import models_dir


def _views() -> list[tuple[str, np.ndarray | Reshaped]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 8 * 3 * 3), dtype=np.float32)
    conv = rng.standard_normal((32, 16, 3, 3), dtype=np.float32)
    return [
        ("contiguous", w),
        ("transpose", w.T),
        ("flatten-reorder", Reshaped(w.T.reshape(8, 3, 3, 64).transpose(1, 2, 0, 3), (72, 64))),
        ("hwio", conv.transpose(2, 3, 1, 0)),
        ("flipped", conv.transpose(2, 3, 1, 0)[::-1, ::-1]),
        ("vector", w[:, 0]),
        ("scalar", np.array(1.5, dtype=np.float32)),
        ("fp16", conv.astype(np.float16).transpose(2, 3, 1, 0)),
        ("empty", np.zeros((0, 4), np.float32)),
    ]


@pytest.mark.parametrize("max_bytes", [4, 256, 4096, 1 << 20])
@pytest.mark.parametrize(("name", "blob"), _views(), ids=[n for n, _ in _views()])
def test_chunks_and_placed_runs_equal_the_materialised_array(name: str, blob: np.ndarray, max_bytes: int) -> None:
    want = np.asarray(blob, dtype=np.float32).reshape(-1)
    chunks = list(iter_chunks(blob, max_bytes, dtype="<f4"))
    assert all(c.flags.c_contiguous and c.ndim == 1 for c in chunks)
    assert all(c.nbytes <= max(max_bytes, 4 * max(1, blob.shape[-1] if blob.ndim else 1)) for c in chunks)
    joined = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    np.testing.assert_array_equal(joined, want)
    placed = np.full(want.size, np.nan, np.float32)
    covered = np.zeros(want.size, bool)
    for offset, run in iter_placed(blob, max_bytes, dtype="<f4"):
        assert not covered[offset:offset + run.size].any(), "runs must not overlap"
        placed[offset:offset + run.size] = run
        covered[offset:offset + run.size] = True
    assert covered.all()
    np.testing.assert_array_equal(placed, want)


def test_gathering_from_the_file_gives_the_same_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """The general pread path (used for strided views over large blobs) on a real model: LeNet's ip1 and conv2.

    The tiled-transpose path is switched off here so the general one is the
    one tested (tests/test_tiled_transpose.py covers that one).
    """
    monkeypatch.setattr(mapped, "PREAD_ABOVE", -1)
    monkeypatch.setattr(tiled_transpose, "as_transposed", lambda view: None)
    folder = models_dir() / "caffe-reference" / "a_lenet"
    net = transform(caffeport.read(folder / "a_lenet.caffemodel", folder / "deploy.prototxt"), "tensorflow")
    for layer_name in ("ip1", "conv2"):
        blob = net.layer(layer_name).blobs[0]
        view = blob.view if isinstance(blob, Reshaped) else blob
        assert blocks._FileGather.for_view(view) is not None, "the file path must be found for the map"
        want = np.asarray(blob).reshape(-1)
        got = np.empty_like(want)
        for offset, run in iter_placed(blob, max_bytes=4096, dtype="<f4"):
            got[offset:offset + run.size] = run
        np.testing.assert_array_equal(got, want)


def test_keras_h5_streamed_equals_plain_h5py_write(tmp_path: Path) -> None:
    """The streaming writer's datasets hold exactly what h5py would write from the materialised arrays."""
    import h5py

    folder = models_dir() / "caffe-reference" / "b_resnet_block"
    result = caffeport.convert(folder / "b_resnet_block.caffemodel", folder / "deploy.prototxt", tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        for layer in result.net.layers:
            if not layer.blobs or layer.type == "FusedScale":
                continue
            for name, blob in zip(layer.weight_names, layer.blobs):
                stored = f[layer.name][f"{layer.name}/{name}:0"]
                assert stored.dtype == np.float32
                np.testing.assert_array_equal(stored[()], np.asarray(blob, dtype=np.float32))


def test_prefetched_keeps_order_and_raises_errors() -> None:
    assert list(prefetched(iter(range(100)), depth=2)) == list(range(100))

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        list(prefetched(failing()))


def test_release_is_harmless_for_plain_arrays() -> None:
    blocks.release(np.ones(10))
    blocks.release(Reshaped(np.ones((2, 3)).T, (6,)))


def test_prefetched_worker_blocks_ctrl_c_so_the_main_thread_gets_it() -> None:
    """The block thread blocks SIGINT and the termination signals from its first instruction (issue 13)."""
    import signal
    import threading

    seen: list[tuple[str, set[int]]] = []

    def items() -> Iterator[int]:
        seen.append((threading.current_thread().name, set(signal.pthread_sigmask(signal.SIG_BLOCK, []))))
        yield 1

    assert list(prefetched(items())) == [1]
    (name, mask), = seen
    assert name == "caffeport-blocks"
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= mask
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "the caller's mask is unchanged"


def test_piece_pool_reuses_a_buffer_only_once_nothing_holds_it() -> None:
    pool = tiled_transpose.PiecePool(limit=2, capacity=1 << 12)
    f4 = np.dtype("<f4")
    first = pool.take((4, 8), f4)
    held = first[1]  # a run someone still has to write
    del first
    second = pool.take((4, 8), f4)
    assert not np.shares_memory(second, held), "a buffer with a live view is busy"
    address = second.__array_interface__["data"][0]
    del second
    third = pool.take((8, 4), f4)
    assert third.__array_interface__["data"][0] == address, "a buffer nobody holds is handed out again"
    assert third.shape == (8, 4) and third.dtype == f4 and third.flags.c_contiguous
    busy = pool.take((4, 8), f4)  # both pooled buffers are busy now: a fresh one, not pooled
    assert len(pool.buffers) == 2 and not any(np.shares_memory(busy, b) for b in pool.buffers)
    assert pool.take((64, 64), f4).nbytes == 64 * 64 * 4, "a piece larger than the buffers is allocated alone"


def test_streamed_keras_h5_is_exact_when_piece_buffers_are_reused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """LeNet's ip1 (a Dense kernel with the flatten reorder) in pieces of 4 KiB, so the few pooled buffers are
    reused hundreds of times while the writer thread still holds earlier ones; read through pread as a large
    layer would be. Every value must equal the reference's materialised kernel."""
    import h5py

    monkeypatch.setattr(tiled_transpose, "PIECE_BYTES", 4096)
    monkeypatch.setattr(tiled_transpose, "_MIN_ROW_BYTES", 0)  # ip1's 2 KB target rows take the tiled path too
    monkeypatch.setattr(mapped, "PREAD_ABOVE", -1)
    monkeypatch.setattr(blocks, "STREAM_BATCH_BYTES", 4096)  # a piece per hand-over, as with 8 MiB pieces
    fresh: list[int] = []
    take = tiled_transpose.PiecePool.take

    def counting(self: tiled_transpose.PiecePool, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        piece = take(self, shape, dtype)
        fresh.append(int(not any(np.shares_memory(piece, b) for b in self.buffers)))
        return piece

    monkeypatch.setattr(tiled_transpose.PiecePool, "take", counting)
    folder = models_dir() / "caffe-reference" / "a_lenet"
    result = caffeport.convert(folder / "a_lenet.caffemodel", folder / "deploy.prototxt", tmp_path / "w.h5")
    assert len(fresh) > 100 and sum(fresh) < len(fresh) / 4, "most pieces come from reused buffers"
    reference = transform(caffeport.read(folder / "a_lenet.caffemodel", folder / "deploy.prototxt"), "tensorflow")
    with h5py.File(tmp_path / "w.h5", "r") as f:
        for layer in result.net.layers:
            for name, blob in zip(layer.weight_names, reference.layer(layer.name).blobs):
                np.testing.assert_array_equal(f[layer.name][f"{layer.name}/{name}:0"][()],
                                              np.asarray(blob, dtype=np.float32))


# ------------------------------------------------------------------ the model's own bytes copied by the kernel

LENET = models_dir() / "caffe-reference" / "a_lenet"


def _lenet(tmp_path: Path, name: str, format: str) -> bytes:
    out = tmp_path / name
    caffeport.convert(LENET / "a_lenet.caffemodel", LENET / "deploy.prototxt", out, format=format)
    return out.read_bytes()


@pytest.mark.parametrize(("format", "suffix"), [("safetensors", ".safetensors"), ("onnx", ".onnx")])
def test_runs_of_the_models_bytes_are_copied_by_the_kernel_giving_the_same_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, format: str, suffix: str) -> None:
    """LeNet's ip1 kernel (1.6 MB, stored as written by both the torch and caffe layouts) goes through
    ``copy_file_range`` from the model's descriptor; the file equals the one written from the map when the
    kernel refuses the copy (EXDEV: another file system) and when the platform has no copy_file_range."""
    import errno
    import os

    copied: list[tuple[int, int]] = []
    real = os.copy_file_range

    def counting(src: int, dst: int, count: int, offset_src: int, offset_dst: int) -> int:
        copied.append((count, offset_src))
        return real(src, dst, count, offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", counting)
    in_kernel = _lenet(tmp_path, f"kernel{suffix}", format)
    assert sum(count for count, _ in copied) >= 500 * 800 * 4, copied
    ip1 = np.asarray(caffeport.read(LENET / "a_lenet.caffemodel").layer("ip1").blobs[0])
    assert ip1.tobytes() in in_kernel

    def refused(*args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", refused)
    assert _lenet(tmp_path, f"refused{suffix}", format) == in_kernel
    monkeypatch.setattr(os, "copy_file_range", lambda *args: 0)  # some file systems copy nothing, unchanged file
    assert _lenet(tmp_path, f"nothing{suffix}", format) == in_kernel
    monkeypatch.delattr(os, "copy_file_range")
    assert _lenet(tmp_path, f"written{suffix}", format) == in_kernel


def test_a_model_that_ends_during_the_copy_and_a_full_disk_are_clear_errors_leaving_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """copy_file_range stopping short (the model shrank meanwhile) is an InputFileError naming the model; a
    refused copy (ENOSPC) an OutputError naming the output; neither leaves a file."""
    import errno
    import os

    from caffeport.errors import InputFileError, OutputError

    real, calls = os.copy_file_range, []

    def short(src: int, dst: int, count: int, offset_src: int, offset_dst: int) -> int:
        calls.append(count)
        return real(src, dst, min(count, 4096), offset_src, offset_dst) if len(calls) == 1 else 0

    monkeypatch.setattr(os, "copy_file_range", short)
    with pytest.raises(InputFileError, match=r"a_lenet\.caffemodel.*the file ended at byte .* while its weights"):
        _lenet(tmp_path, "shrank.safetensors", "safetensors")

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "copy_file_range", full)
    with pytest.raises(OutputError, match=r"full\.safetensors.*No space left on device"):
        _lenet(tmp_path, "full.safetensors", "safetensors")
    assert not list(tmp_path.iterdir())
