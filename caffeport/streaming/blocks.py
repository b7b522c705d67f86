"""Streaming blobs in blocks: bounded memory, cache-friendly transposes, pages released after use.

Layout transforms do not copy weights. They return numpy *views* onto the
model's memory map (a transpose, a flip, a reshape that is a view), or a
`Reshaped` view when the target shape cannot be a numpy view (the flatten
reorder). Exporters then pull each blob through `iter_chunks`, which yields
contiguous blocks of at most a few MiB in the target's C order, cast to the
target dtype. A block that is a transpose is copied tile by tile so both the
reads and the writes stay in cache: a plain ``W.T`` copy of a 400 MB matrix
misses the cache on every element and is several times slower.

Writers that can seek use `iter_placed` instead: blocks in whatever order
reads the source best, each with its place in the target. A transposed
matrix (every Dense kernel) goes through `caffeport.streaming.tiled_transpose`; other
strided views through the general block path here. `stream_placed` is the
one writing loop for them: blocks made in a background thread, written in
batches with vectored writes.

`release` drops a blob's pages from this process's memory map once they have
been used (they stay in the OS page cache), so peak RSS does not grow with
the model size.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from queue import Empty, Queue
from typing import Any, Protocol, TypeVar

import numpy as np

from caffeport.io.mapped import SourceFile, pread_source, release_pages
from caffeport.io.output import block_deferred_signals, start_worker
from caffeport.ir import Reshaped
from caffeport.streaming import tiled_transpose

#: the largest block `iter_chunks` yields, in bytes of the target dtype
BLOCK_BYTES = 16 << 20
T = TypeVar("T")


class LazyBlob(Protocol):
    """What exporters accept besides a numpy array: a shape, a dtype and C-order chunks on demand."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    def iter_chunks(self, max_elements: int) -> Iterator[np.ndarray]: ...


Blob = np.ndarray | Reshaped | LazyBlob


def iter_chunks(blob: Blob, max_bytes: int = BLOCK_BYTES, dtype: Any = None, *,
                release_source: bool = False) -> Iterator[np.ndarray]:
    """The blob's elements in C order as contiguous 1-D arrays of at most ``max_bytes`` (in ``dtype``).

    With ``release_source``, the blob's pages in the model's memory map are
    released after each chunk is consumed (see `release`): the caller must be
    done with a chunk when it asks for the next one.
    """
    if isinstance(blob, np.generic):  # a numpy scalar is a 0-d blob
        blob = np.asarray(blob)
    target = np.dtype(dtype) if dtype is not None else np.dtype(blob.dtype)
    max_elements = max(1, max_bytes // max(target.itemsize, np.dtype(blob.dtype).itemsize))
    view = blob.view if isinstance(blob, Reshaped) else blob
    chunks = view.iter_chunks(max_elements) if not isinstance(view, np.ndarray) else _view_chunks(view, max_elements)
    for chunk in chunks:
        yield chunk.astype(target, copy=False).reshape(-1)
        if release_source:
            release(blob)


def _view_chunks(view: np.ndarray, max_elements: int) -> Iterator[np.ndarray]:
    if view.size == 0:
        return
    if view.ndim == 0 or view.flags.c_contiguous:
        flat = view.reshape(-1)
        for start in range(0, flat.size, max_elements):
            yield flat[start:start + max_elements]
        return
    if view.ndim == 1:
        for start in range(0, view.size, max_elements):
            yield np.ascontiguousarray(view[start:start + max_elements])
        return
    if view.ndim > 2 and math.prod(view.shape[-2:]) <= max_elements:
        # gather whole trailing matrices until a block is full
        per = math.prod(view.shape[-2:])
        leading = view.reshape(-1, *view.shape[-2:]) if _reshapable(view) else None
        if leading is not None:
            step = max(1, max_elements // per)
            for start in range(0, leading.shape[0], step):
                yield _copy_block(leading[start:start + step])
            return
        for index in np.ndindex(*view.shape[:-2]):
            yield _copy_block(view[index])
        return
    if view.ndim > 2:
        for index in np.ndindex(*view.shape[:-2]):
            yield from _view_chunks(view[index], max_elements)
        return
    rows = max(1, max_elements // max(1, view.shape[1]))
    for start in range(0, view.shape[0], rows):
        yield _copy_block(view[start:start + rows])


def _reshapable(view: np.ndarray) -> bool:
    """Whether the leading axes can be merged into one without a copy."""
    try:
        merged = view.view()
        merged.shape = (-1, *view.shape[-2:])
    except AttributeError:
        return False
    return True


def _copy_block(block: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``block`` that reads its source in the source's own order.

    The block is first copied with its axes ordered by source stride (so the
    source is read front to back), then rearranged to C order inside a buffer
    small enough to stay in cache. Copying a transposed view directly would
    touch a new cache line (and a new page) for almost every element.
    """
    if block.flags.c_contiguous:
        return block
    order = sorted(range(block.ndim), key=lambda a: -abs(block.strides[a]))
    if order == list(range(block.ndim)):
        return np.ascontiguousarray(block)
    return _rearrange(np.ascontiguousarray(block.transpose(order)), order)


#: width of the column strips `_transpose2d` copies: wide enough to amortise the loop, narrow enough that
#: the source rows feeding one strip stay in L1
_STRIP = 16
_STRIP_MIN_COLS = 512


def _transpose2d(matrix: np.ndarray) -> np.ndarray:
    """``matrix.T`` as a C-contiguous copy, several times faster than numpy's own for large matrices.

    numpy copies a transpose element by element along the output rows, each
    read from another source row: a cache miss per element once the source
    rows outgrow the cache. Copying a strip of 16 output columns at a time
    reads 16 source rows at once, which stay cached while the strip is filled.
    """
    rows, cols = matrix.shape
    if cols < _STRIP_MIN_COLS:  # short source rows: numpy's own copy is already cache-friendly (measured)
        return np.ascontiguousarray(matrix.T)
    out = np.empty((cols, rows), dtype=matrix.dtype)
    for start in range(0, rows, _STRIP):
        out[:, start:start + _STRIP] = matrix[start:start + _STRIP].T
    return out


def _rearrange(staged: np.ndarray, order: list[int]) -> np.ndarray:
    """The C-order block from ``staged``, which holds it with its axes in ``order`` (source order).

    The output's last axis is usually the source's outermost (a transposed
    weight matrix): then one fast 2-D transpose brings it innermost, and the
    remaining reordering moves whole contiguous rows.
    """
    n = staged.ndim
    if n >= 2 and order[0] == n - 1:
        last = staged.shape[0]
        moved = _transpose2d(staged.reshape(last, -1)).reshape(*staged.shape[1:], last)
        rest = order[1:]  # the output axes 0..n-2, in the order `moved` holds them
        return np.ascontiguousarray(moved.transpose([*np.argsort(rest), n - 1]))
    return np.ascontiguousarray(staged.transpose(np.argsort(order)))


def iter_placed(blob: Blob, max_bytes: int = BLOCK_BYTES, dtype: Any = None, *,
                release_source: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(element offset, contiguous 1-D run)`` pairs covering the blob's C-order elements, in any order.

    For writers that can seek (HDF5 datasets at known offsets, safetensors):
    blocks are chosen so each touches a bounded part of the source, even for
    a transposed or reordered view whose C order jumps all over the model
    file. Each block spans whole output rows along the last axis and runs of
    the axes that are closest together in the source.
    """
    target = np.dtype(dtype) if dtype is not None else np.dtype(blob.dtype)
    max_elements = max(1, max_bytes // max(target.itemsize, np.dtype(blob.dtype).itemsize))
    view = blob.view if isinstance(blob, Reshaped) else blob
    if not isinstance(view, np.ndarray):
        offset = 0
        for chunk in iter_chunks(blob, max_bytes, dtype, release_source=release_source):
            yield offset, chunk
            offset += chunk.size
        return
    transposed = tiled_transpose.as_transposed(view)
    if transposed is not None:
        yield from tiled_transpose.transposed_runs(transposed, target, release_source=release_source)
        return
    for offset, run in _placed_runs(view, max_elements):
        yield offset, run.astype(target, copy=False)
        if release_source:
            release(view)


def _placed_runs(view: np.ndarray, max_elements: int) -> Iterator[tuple[int, np.ndarray]]:
    shape, n = view.shape, view.ndim
    if view.size == 0:
        return
    if n <= 1 or view.flags.c_contiguous or shape[-1] > max_elements:
        offset = 0
        for chunk in _view_chunks(view, max_elements):
            yield offset, chunk.reshape(-1)
            offset += chunk.size
        return
    # choose the block: the last axis whole, then whole axes in order of source stride, then a range of one more
    budget = max_elements // shape[-1]
    extent = [1] * (n - 1) + [shape[-1]]
    for axis in sorted(range(n - 1), key=lambda a: abs(view.strides[a])):
        if shape[axis] <= budget:
            extent[axis] = shape[axis]
            budget //= shape[axis]
        else:
            extent[axis] = max(1, budget)
            break
    out_strides = [math.prod(shape[a + 1:]) for a in range(n)]
    starts_per_axis = [range(0, shape[a], extent[a]) for a in range(n)]
    # the trailing axes that a block covers whole are one contiguous run in the output
    k = n - 1
    while k > 0 and extent[k] == shape[k]:
        k -= 1
    reader = _FileGather.for_view(view)
    for starts in itertools.product(*starts_per_axis):
        box = view[tuple(slice(s, s + e) for s, e in zip(starts, extent))]
        block = reader.copy(box) if reader is not None else _copy_block(box)
        base = sum(s * st for s, st in zip(starts, out_strides))
        lead = block.shape[:k]
        for index in np.ndindex(*lead):
            offset = base + sum(i * out_strides[a] for a, i in enumerate(index))
            yield offset, block[index].reshape(-1)


class _FileGather:
    """Copies boxes of a large strided view by reading the model file with pread, not through the map.

    A strided view touches every page of its source for each block, and with
    the kernel's large page-cache folios every touch maps far more than it
    reads: through the map, one block of a 400 MB layer can put the whole
    layer in this process's resident set. pread copies just the bytes asked
    for into a staging buffer in source order; the block is then rearranged
    in memory. (Transposed matrices, the common case, take the faster
    `caffeport.streaming.tiled_transpose` path instead.)
    """

    def __init__(self, source: SourceFile, view: np.ndarray) -> None:
        self.source = source
        self.view_address = view.__array_interface__["data"][0]

    @classmethod
    def for_view(cls, view: np.ndarray) -> _FileGather | None:
        if any(s <= 0 for s in view.strides):
            return None
        source = pread_source(view)
        return cls(source, view) if source is not None else None

    def copy(self, box: np.ndarray) -> np.ndarray:
        order = sorted(range(box.ndim), key=lambda a: -box.strides[a])
        source = box.transpose(order)
        k = source.ndim
        expected = source.itemsize
        while k > 0 and source.strides[k - 1] == expected:
            expected *= source.shape[k - 1]
            k -= 1
        staged = np.empty(source.shape, dtype=source.dtype)
        rows = staged.reshape(-1, math.prod(source.shape[k:]) if k < source.ndim else 1)
        start = self.source.offset + (box.__array_interface__["data"][0] - self.view_address)
        if k == 0:
            offsets = np.array([start])
        else:
            grid = np.indices(source.shape[:k]).reshape(k, -1)
            offsets = start + np.asarray(source.strides[:k], dtype=np.int64) @ grid
        for row, offset in zip(rows, offsets.tolist()):
            self.source.read_into(memoryview(row).cast("B"), offset)
        return _rearrange(staged, order)


def pwrite_all(fd: int, data: memoryview, position: int) -> None:
    """Write all of ``data`` at byte ``position`` of ``fd`` (a pwrite may write less than asked)."""
    while data:
        written = os.pwrite(fd, data, position)
        data, position = data[written:], position + written


#: runs handed from the block thread to the writing one at a time: many small rows per hand-over, few MB in flight
STREAM_BATCH_BYTES = 8 << 20


class Progress:
    """What an exporter has written so far, reported to ``ExportOptions.progress`` (bytes and blobs, done and total).

    One counter for every streaming format: an exporter makes it with the
    totals it is about to write and either passes `on_batch` to `stream_placed`
    (items tagged with their blob's index as the third element) or calls
    `wrote` after each blob. Without a callback it does nothing.
    """

    def __init__(self, callback: Callable[[int, int, int, int], None] | None, total_bytes: int,
                 total_blobs: int) -> None:
        self.callback = callback
        self.total_bytes = total_bytes
        self.total_blobs = total_blobs
        self.bytes = 0
        self.blobs = 0
        self._current: object = None

    def wrote(self, nbytes: int, blob: object) -> None:
        """``nbytes`` more of blob ``blob`` (any tag that differs from one blob to the next) are written."""
        self.bytes += nbytes
        if blob != self._current:
            self.blobs += 1
            self._current = blob
        if self.callback is not None:
            self.callback(self.bytes, self.total_bytes, min(self.blobs, self.total_blobs), self.total_blobs)

    def on_batch(self, batch: list[tuple[Any, ...]]) -> None:
        """`stream_placed`'s ``on_batch``: items are (position, run, blob tag, ...).

        Consecutive items of one blob are reported together: a transposed
        Dense kernel comes as thousands of row runs, and one report each was
        a measurable share of the writing thread's time.
        """
        nbytes, tag = 0, self._current
        for item in batch:
            item_tag = item[2] if len(item) > 2 else None
            if item_tag != tag and nbytes:
                self.wrote(nbytes, tag)
                nbytes = 0
            tag = item_tag
            nbytes += item[1].nbytes
        if nbytes:
            self.wrote(nbytes, tag)


def stream_placed(fd: int, items: Iterable[tuple[Any, ...]],
                  on_batch: Callable[[list[tuple[Any, ...]]], None] | None = None) -> None:
    """Write ``(byte position, contiguous run, ...)`` items made in a background thread, as they come.

    The items (from `iter_placed`, with any tags the caller adds after the
    run) are made in a thread of their own, which reads and transposes while
    this one writes; both let go of the GIL for most of their work. Runs are
    handed over in batches and written with `write_placed`. A run that is a
    view of the model's memory map is released once written, so streaming
    contiguous blobs does not pile the model's pages up in this process.
    ``on_batch`` sees each batch after it is written (for progress).
    """
    for batch in prefetched(batched(items, lambda item: item[1].nbytes, STREAM_BATCH_BYTES)):
        write_placed(fd, [(item[0], item[1]) for item in batch])
        for item in batch:
            if _may_be_mapped(item[1]):
                release_pages(item[1])
        if on_batch is not None:
            on_batch(batch)


def _may_be_mapped(run: np.ndarray) -> bool:
    """False for a run that is (a view of) an array owning its memory: a made block, nothing to release.

    Only runs that are views of the model's map have pages to release; the
    thousands of row runs of a transposed kernel are views of pieces made in
    memory, and walking their base chain for each was wasted time.
    """
    base = run.base
    return base is not None and not (isinstance(base, np.ndarray) and base.base is None)


#: a run that is a view of the model's map and larger than this is copied into the output by the kernel
COPY_IN_KERNEL_ABOVE = 64 << 10


def write_placed(fd: int, runs: Iterable[tuple[int, np.ndarray]]) -> None:
    """Write each contiguous run at its byte position; runs that meet in the file go in one vectored write.

    A transpose with reordered rows hands out its target rows one by one, in
    source order; sorted, the rows that meet in the file (a whole group of
    the flatten reorder) become a single ``pwritev``, as cheap as one
    contiguous write, instead of one system call each. A run that is the
    model's own bytes (a view of its map, stored as written: the common case
    for the torch and caffe layouts) is copied by the kernel
    (`caffeport.io.mapped.SourceFile.copy_to`) when above `COPY_IN_KERNEL_ABOVE`:
    VGG16 to safetensors took 0.71 s wall, 0.74 s CPU and 39 MiB peak RSS
    against 1.07 s, 1.18 s and 56 MiB written from the map, interleaved
    (benchmarks/RESULTS.md, "ONNX export"); smaller runs join their
    neighbours' vectored write.
    """
    ordered = sorted(runs, key=lambda item: item[0])
    sources = [_kernel_source(run) for _, run in ordered]
    i = 0
    while i < len(ordered):
        position, run = ordered[i]
        source = sources[i]
        i += 1
        if source is not None and source.copy_to(fd, run.nbytes, position):
            continue
        buffers = [memoryview(run).cast("B")]
        end = position + run.nbytes
        while i < len(ordered) and ordered[i][0] == end and sources[i] is None and len(buffers) < _IOV_MAX:
            run = ordered[i][1]
            buffers.append(memoryview(run).cast("B"))
            end += run.nbytes
            i += 1
        _pwritev_all(fd, buffers, position)


def _kernel_source(run: np.ndarray) -> SourceFile | None:
    """Where in the model file the kernel can copy ``run`` from (a contiguous view of its map, large enough)."""
    if run.nbytes <= COPY_IN_KERNEL_ABOVE or not run.flags.c_contiguous:  # (thousands of a transpose's rows)
        return None
    return pread_source(run, COPY_IN_KERNEL_ABOVE)


_IOV_MAX = 1024


def _pwritev_all(fd: int, buffers: list[memoryview], position: int) -> None:
    written = os.pwritev(fd, buffers, position) if len(buffers) > 1 and hasattr(os, "pwritev") else 0
    for data in buffers:  # what a short (or no) vectored write left, buffer by buffer
        if written >= len(data):
            written -= len(data)
        else:
            pwrite_all(fd, data[written:], position + written)
            written = 0
        position += len(data)


def batched(items: Iterable[T], size: Callable[[T], int], max_size: int) -> Iterator[list[T]]:
    """``items`` in consecutive lists whose ``size`` adds up to at most ``max_size`` (an item over it goes alone).

    A row-by-row transpose hands out tens of thousands of small runs; passing
    them between threads one at a time would cost more than copying them.
    """
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and total + n > max_size:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Run ``items`` in a background thread, at most ``depth`` items ahead of the consumer.

    Block copies (pread, numpy) and writes (pwrite) both release the GIL, so
    preparing the next block while the current one is written uses both
    cores; ``depth`` bounds the memory held in flight. The thread blocks
    Ctrl-C and the termination signals (`caffeport.io.output.start_worker`), so
    they reach the main thread, which unwinds and cleans up.
    """
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        block_deferred_signals()  # inherited from start_worker already; Ctrl-C belongs to the main thread
        try:
            for item in items:
                if stop.is_set():
                    return
                queue.put((True, item))
            queue.put((False, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            queue.put((False, exc))

    worker = threading.Thread(target=produce, name="caffeport-blocks", daemon=True)
    start_worker(worker)
    try:
        while True:
            ok, item = queue.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get(timeout=0.05)


def release(blob: Blob) -> None:
    """Drop the pages backing ``blob`` from this process's memory map (no-op for in-memory arrays).

    The pages stay in the OS page cache, so touching them again is a cheap
    minor fault; what goes is their share of this process's resident set.
    """
    array = blob.view if isinstance(blob, Reshaped) else blob
    if isinstance(array, np.ndarray):
        release_pages(array)
