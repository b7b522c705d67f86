"""The tiled transpose gives exactly the materialised target, for every shape of transposed view and tile size."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import caffeport
from caffeport.errors import InputFileError
from caffeport.io import mapped
from caffeport.readers.files import map_file
from caffeport.streaming import blocks, tiled_transpose
from caffeport.streaming.blocks import Reshaped, iter_placed
from caffeport.streaming.tiled_transpose import as_transposed, transposed_runs
from caffeport.transforms import transform
from tests.conftest import models_dir


def _flatten_reorder(w: np.ndarray, c: int, h: int, wd: int) -> np.ndarray:
    """The view the flatten pass makes of a Caffe InnerProduct weight (outputs, c*h*w)."""
    return w.T.reshape(c, h, wd, w.shape[0]).transpose(1, 2, 0, 3)


def _assemble(runs: list[tuple[int, np.ndarray]], size: int) -> np.ndarray:
    placed = np.full(size, np.nan, np.float32)
    covered = np.zeros(size, bool)
    for offset, run in runs:
        assert run.ndim == 1 and run.flags.c_contiguous and run.dtype == np.float32
        assert not covered[offset:offset + run.size].any(), "runs must not overlap"
        placed[offset:offset + run.size] = run
        covered[offset:offset + run.size] = True
    assert covered.all(), "runs must cover the whole target"
    return placed


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of 3 source rows and 5 columns, pieces of 2: every edge case of the tiling on small arrays."""
    monkeypatch.setattr(tiled_transpose, "TILE_ROWS", 3)
    monkeypatch.setattr(tiled_transpose, "TILE_BYTES", 3 * 5 * 8)
    monkeypatch.setattr(tiled_transpose, "PIECE_BYTES", 2 * 3 * 4)
    monkeypatch.setattr(tiled_transpose, "_MIN_ROW_BYTES", 0)


def _cases() -> list[tuple[str, np.ndarray, bool]]:
    """(name, view, whether the target rows follow the source columns in order)."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((11, 2 * 3 * 4), dtype=np.float32)
    return [
        ("dense", w.T, True),
        ("dense-leading-one", w.T[None], True),
        ("flatten-reorder", _flatten_reorder(w, 2, 3, 4), False),
        ("flatten-reorder-float64", _flatten_reorder(w.astype(np.float64), 2, 3, 4), False),
        ("flatten-reorder-float16", _flatten_reorder(w.astype(np.float16), 2, 3, 4), False),
        ("hwio", rng.standard_normal((7, 5, 3, 2), dtype=np.float32).transpose(2, 3, 1, 0), False),
        ("deconv-hwoi", rng.standard_normal((6, 4, 3, 3), dtype=np.float32).transpose(2, 3, 1, 0), False),
    ]


@pytest.mark.parametrize(("name", "view", "in_order"), _cases(), ids=[c[0] for c in _cases()])
def test_tiled_runs_equal_the_materialised_target(small_tiles: None, name: str, view: np.ndarray,
                                                  in_order: bool) -> None:
    matrix = as_transposed(view)
    assert matrix is not None
    assert (matrix.target_rows is None) == in_order
    # all runs are collected before any is used: a run must not share memory with a buffer reused later
    runs = list(transposed_runs(matrix, "<f4"))
    np.testing.assert_array_equal(_assemble(runs, view.size), np.asarray(view, dtype=np.float32).reshape(-1))


def test_views_that_are_not_transposed_matrices_are_left_to_the_general_path() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((64, 72), dtype=np.float32)
    conv = rng.standard_normal((32, 16, 3, 3), dtype=np.float32)
    assert as_transposed(w) is None, "already in target order"
    assert as_transposed(conv.transpose(2, 3, 1, 0)[::-1, ::-1]) is None, "flipped: negative strides"
    assert as_transposed(conv.transpose(2, 3, 1, 0)) is None, "reordered rows of 32 floats: too short"
    assert as_transposed(w[:, :1].T) is None, "one source column"
    assert as_transposed(w.T[::2]) is None, "a strided selection does not fill source rows"
    wide = rng.standard_normal((1024, 72), dtype=np.float32)
    reordered = as_transposed(_flatten_reorder(wide, 8, 3, 3))
    assert reordered is not None and reordered.target_rows is not None, "reordered rows of 4 KiB are worth it"
    # target row of source column k = c*9 + h*3 + w is (h*3 + w)*8 + c
    k = np.arange(72)
    np.testing.assert_array_equal(reordered.target_rows, (k % 9) * 8 + k // 9)


@pytest.mark.parametrize("dtype", ["<f4", "<f2", "<f8"])
def test_reading_a_mapped_file_with_pread_gives_the_same_runs(tmp_path: Path, small_tiles: None,
                                                             monkeypatch: pytest.MonkeyPatch, dtype: str) -> None:
    """Views onto a mapped file over PREAD_ABOVE are read with pread into the staging buffer."""
    monkeypatch.setattr(mapped, "PREAD_ABOVE", -1)
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((13, 2 * 3 * 4)).astype(dtype)
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 12 + weight.tobytes())
    stored = np.frombuffer(map_file(path), dtype=dtype, offset=12, count=weight.size).reshape(weight.shape)
    for view in (stored.T, _flatten_reorder(stored, 2, 3, 4)):
        matrix = as_transposed(view)
        assert matrix is not None
        opened = mapped.pread_source(matrix.source)
        assert opened is not None and opened.offset == 12, "the file and the view's offset in it must be found"
        runs = list(transposed_runs(matrix, "<f4", release_source=True))
        np.testing.assert_array_equal(_assemble(runs, view.size), np.asarray(view, dtype=np.float32).reshape(-1))


def test_a_real_model_through_iter_placed(small_tiles: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """LeNet's ip1 (flatten reorder of a 50x4x4 blob) and ip2 (a plain W.T), read from the caffemodel by pread."""
    monkeypatch.setattr(mapped, "PREAD_ABOVE", -1)
    folder = models_dir() / "caffe-reference" / "a_lenet"
    net = transform(caffeport.read(folder / "a_lenet.caffemodel", folder / "deploy.prototxt"), "tensorflow")
    for layer_name in ("ip1", "ip2"):
        blob = net.layer(layer_name).blobs[0]
        view = blob.view if isinstance(blob, Reshaped) else blob
        assert as_transposed(view) is not None
        want = np.asarray(blob, dtype=np.float32).reshape(-1)
        np.testing.assert_array_equal(_assemble(list(iter_placed(blob, dtype="<f4")), want.size), want)


def test_write_placed_joins_runs_that_meet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    data = rng.standard_normal(1000).astype(np.float32)
    # runs in shuffled order: [0,100) [100,250) meet, a gap, then [400,1000) in three meeting parts
    cuts = [(0, 100), (100, 250), (400, 700), (700, 701), (701, 1000)]
    runs = [(4 * a, data[a:b]) for a, b in cuts]
    runs = [runs[i] for i in (3, 0, 4, 2, 1)]
    calls: list[int] = []
    real_pwritev = blocks.os.pwritev

    def counting_pwritev(fd: int, buffers: list[memoryview], position: int) -> int:
        calls.append(len(buffers))
        return real_pwritev(fd, buffers, position)

    monkeypatch.setattr(blocks.os, "pwritev", counting_pwritev)
    path = tmp_path / "out.bin"
    path.write_bytes(b"\xff" * 4000)
    with open(path, "r+b") as handle:
        blocks.write_placed(handle.fileno(), runs)
    written = np.frombuffer(path.read_bytes(), dtype=np.float32)
    np.testing.assert_array_equal(written[:250], data[:250])
    np.testing.assert_array_equal(written[400:], data[400:])
    assert path.read_bytes()[1000:1600] == b"\xff" * 600, "the gap is left alone"
    assert sorted(calls) == [2, 3], "two vectored writes: one per group of runs that meet"


def _mapped_weight(tmp_path: Path, weight: np.ndarray) -> tuple[Path, np.ndarray]:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x00" * 12 + weight.tobytes())
    stored = np.frombuffer(map_file(path), dtype=weight.dtype, offset=12, count=weight.size).reshape(weight.shape)
    return path, stored


def test_pread_reads_the_mapped_file_even_after_its_path_names_another(tmp_path: Path, small_tiles: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The descriptor kept at map time is read, never the path opened again (which may be another file by then)."""
    monkeypatch.setattr(mapped, "PREAD_ABOVE", -1)
    weight = np.random.default_rng(5).standard_normal((13, 24)).astype(np.float32)
    path, stored = _mapped_weight(tmp_path, weight)
    other = tmp_path / "other.bin"
    other.write_bytes(b"\x00" * (12 + weight.nbytes))
    os.replace(other, path)  # the path now names a file of zeros
    monkeypatch.chdir(tmp_path)
    matrix = as_transposed(stored.T)
    assert matrix is not None
    np.testing.assert_array_equal(_assemble(list(transposed_runs(matrix, "<f4")), weight.size), weight.T.reshape(-1))


def test_a_file_cut_short_while_converting_is_a_clear_error(tmp_path: Path, small_tiles: None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapped, "PREAD_ABOVE", -1)
    weight = np.ones((13, 24), np.float32)
    path, stored = _mapped_weight(tmp_path, weight)
    matrix = as_transposed(stored.T)
    assert matrix is not None
    os.truncate(path, 100)  # the map is not touched: only pread reads, and finds the end
    with pytest.raises(InputFileError, match="ended at byte") as info:
        list(transposed_runs(matrix, "<f4"))
    assert info.value.path is not None and Path(info.value.path).name == "weights.bin"


def test_pages_of_maps_caffeport_did_not_make_are_never_released(tmp_path: Path) -> None:
    """A copy-on-write memmap holds edits only in memory: releasing its pages would lose them."""
    path = tmp_path / "cow.npy"
    np.save(path, np.zeros(4096, np.float32))
    edited = np.load(path, mmap_mode="c")
    edited[:] = 1.5
    blocks.release(edited)
    assert (edited == 1.5).all()
