"""Every shared model cut short at every byte (small files) or at ~2000 offsets (large ones).

A truncated download is the most common broken model file. Whatever the
offset, `caffeport.read` (and `read_blob` for means) must give a clean
`CaffeportError` (never the entry point's `InternalDecodeError` guard, which
would mean a check is missing) or, where the cut lands on a message boundary,
a valid net whose layers are the first layers of the whole file.

Each file is written once to a scratch directory and shortened in place with
``os.truncate`` from the longest cut to the shortest, so no cut costs a copy;
the files are shared out between two worker processes.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import h5py
import numpy as np

import caffeport
from caffeport.codec.wire import LENGTH, Reader
from caffeport.errors import CaffeportError, InternalDecodeError
from tests.conftest import models_dir

#: files up to this size are cut at every byte
EVERY_BYTE_LIMIT = 64 * 1024
#: larger files are cut at this many offsets (all layer and blob boundaries among them)
DENSE_SAMPLE = 2000


def _shared(pattern: str) -> list[Path]:
    files = sorted(models_dir().rglob(pattern))
    assert files, f"no {pattern} files in {models_dir()}"
    return files


def _boundaries(data: bytes) -> tuple[set[int], set[int]]:
    """Where layers start and end (+-1), and where their blobs start and end."""
    layers: set[int] = set()
    blobs: set[int] = set()
    reader = Reader(data)
    try:
        for field in reader.fields(0, len(data)):
            layers.update(field.offset + d for d in (-1, 0, 1))
            layers.update(field.end + d for d in (-1, 0, 1))
            if field.wire_type == LENGTH and field.number in (2, 100):  # V1 and V2 layers
                for inner in reader.fields(field.start, field.end):
                    if inner.number in (6, 7):  # V1 and V2 blobs
                        blobs.update((inner.offset, inner.start, inner.end))
    except CaffeportError:
        pass
    return layers, blobs


def _hdf5_boundaries(path: Path) -> set[int]:
    points: set[int] = set()
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
                start = obj.id.get_offset()
                points.update((start, start + obj.id.get_storage_size()))

        f.visititems(visit)
    return {p + d for p in points for d in (-1, 0, 1)}


def cut_offsets(path: Path) -> list[int]:
    size = path.stat().st_size
    if size <= EVERY_BYTE_LIMIT:
        return list(range(size - 1, 0, -1))
    data = path.read_bytes()
    if data.startswith(b"\x89HDF"):
        layers, blobs = set(), _hdf5_boundaries(path)
    else:
        layers, blobs = _boundaries(data)
    inside = lambda offsets: {p for p in offsets if 0 < p < size}  # noqa: E731
    layers, blobs = inside(layers), sorted(inside(blobs) - layers)
    room = max(DENSE_SAMPLE - len(layers), DENSE_SAMPLE // 4)
    if len(blobs) > room // 2:  # many blobs: an even share of their boundaries
        blobs = blobs[:: math.ceil(len(blobs) / (room // 2))]
    step = max(1, size // max(1, room - len(blobs)))
    offsets = set(range(1, size, step)) | layers | set(blobs) | {1, 2, 3, size - 1}
    return sorted(offsets, reverse=True)


def truncations(path: Path, scratch: Path) -> Iterator[tuple[int, Path]]:
    copy = scratch / path.name
    copy.write_bytes(path.read_bytes())
    try:
        for offset in cut_offsets(path):
            os.truncate(copy, offset)
            yield offset, copy
    finally:
        copy.unlink()


def _prefix_problem(net: caffeport.Net, whole: caffeport.Net) -> str | None:
    """Why a net read from a cut file is not the first layers of the whole file, with the same blobs."""
    if len(net.layers) > len(whole.layers):
        return f"{len(net.layers)} layers, the whole file has {len(whole.layers)}"
    for got, want in zip(net.layers, whole.layers):
        if (got.name, got.type, len(got.blobs)) != (want.name, want.type, len(want.blobs)):
            return f"layer {got.name!r} ({got.type}, {len(got.blobs)} blobs) is not {want.name!r}"
        for a, b in zip(got.blobs, want.blobs):
            if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=True):
                return f"layer {got.name!r}: a blob differs from the whole file's"
    return None


def _attempt(read: Callable[[Path], object], path: Path) -> tuple[object | None, str | None]:
    """(result, None), (None, None) for a clean CaffeportError, or (None, what went wrong)."""
    try:
        return read(path), None
    except InternalDecodeError as exc:
        return None, f"reached the unchecked-input guard: {exc!r} (from {exc.__cause__!r})"
    except CaffeportError:
        return None, None
    except Exception as exc:  # any other exception is the bug this test looks for
        return None, f"{type(exc).__name__}: {exc}"


def cut_and_read(source: str, kind: str) -> tuple[int, int, list[str]]:
    """Read every cut of one file; returns (cuts, valid results, problems). Runs in a worker process."""
    path = Path(source)
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="caffeport-trunc-",
                                    dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    cuts = valid = 0
    problems: list[str] = []
    read: Callable[[Path], object] = caffeport.read_blob if kind == "mean" else caffeport.read
    try:
        whole = read(path)
        for offset, cut in truncations(path, scratch):
            cuts += 1
            result, problem = _attempt(read, cut)
            if result is not None:
                valid += 1
                if isinstance(result, caffeport.Net) and isinstance(whole, caffeport.Net):
                    problem = _prefix_problem(result, whole)
                elif not (isinstance(result, np.ndarray) and 0 < result.size <= np.asarray(whole).size):
                    problem = f"read_blob gave {type(result).__name__} {getattr(result, 'shape', '')}"
            if problem is not None:
                problems.append(f"{path.name} cut at {offset}: {problem}")
                if len(problems) >= 20:
                    break
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    return cuts, valid, problems


def _run_all(files: list[tuple[Path, str]]) -> tuple[int, int, list[str]]:
    """All files' cuts, spread over two worker processes (the slowest files first)."""
    files = sorted(files, key=lambda item: -min(item[0].stat().st_size, EVERY_BYTE_LIMIT * 4))
    cuts = valid = 0
    problems: list[str] = []
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1), mp_context=mp.get_context("spawn")) as pool:
        for n, ok, found in pool.map(cut_and_read, [str(p) for p, _ in files], [k for _, k in files]):
            cuts, valid = cuts + n, valid + ok
            problems += found
    return cuts, valid, problems


def _caffemodels() -> list[Path]:
    return _shared("*.caffemodel") + _shared("*.caffemodel.h5")


def test_truncated_models_and_means_fail_cleanly_or_read_a_prefix() -> None:
    start = time.perf_counter()
    files = [(p, "model") for p in _caffemodels()] + [(p, "mean") for p in _shared("*.binaryproto")]
    cuts, valid, problems = _run_all(files)
    assert not problems, "\n".join(problems)
    small = sum(p.stat().st_size - 1 for p, _ in files if p.stat().st_size <= EVERY_BYTE_LIMIT)
    assert cuts >= small + DENSE_SAMPLE * sum(p.stat().st_size > EVERY_BYTE_LIMIT for p, _ in files) * 9 // 10
    print(f"\n{cuts} truncated files ({valid} valid results) in {time.perf_counter() - start:.1f} s")


def test_cut_offsets_cover_every_byte_of_small_files_and_boundaries_of_large_ones() -> None:
    small = min(_shared("*.caffemodel"), key=lambda p: p.stat().st_size)
    assert cut_offsets(small) == list(range(small.stat().st_size - 1, 0, -1))
    large = max(_shared("*.caffemodel"), key=lambda p: p.stat().st_size)
    offsets = set(cut_offsets(large))
    data = large.read_bytes()
    layer_starts = [f.offset for f in Reader(data).fields(0, len(data)) if f.number == 100]
    assert layer_starts and set(layer_starts) <= offsets
    assert 1000 <= len(offsets) <= 2 * DENSE_SAMPLE
