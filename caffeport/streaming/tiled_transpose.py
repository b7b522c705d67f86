"""Streaming a transposed weight matrix tile by tile: the layout change behind every Dense kernel.

Caffe stores an InnerProduct weight as (outputs, inputs); Keras and Flax want
(inputs, outputs), with the inputs reordered when the layer flattens a
spatial blob. In the target's C order each target row is one *column* of the
Caffe matrix, so a streamed copy must either read or write with a stride. The
big ones (VGG16's fc6 is 411 MB of a 553 MB model) decide how fast a whole
conversion runs, so they get this path:

- the source is read in tiles of up to 16384 source rows and as many columns
  as fit in 32 MiB (or 4 KiB per row, whichever is more), one ``pread`` per
  row into one reused staging buffer. File-backed views over 16 MiB are read
  with ``pread``, never through the map: with the kernel's large page-cache
  folios, touching one value per source row would map the whole layer into
  this process;
- each tile is transposed in strips of 8 to 64 source rows, which stay in
  the cache while their values are spread over the target rows (numpy's own
  ``W.T`` copy misses the cache on nearly every element and runs at a
  quarter of the speed);
- every target row (a row fragment only past 16384 source rows: measured,
  fragments written into each other's gaps cost ext4 more than the smaller
  reads of whole rows) is handed out with its offset in the target, so a
  writer that seeks puts it in place and no pass is spent only reordering
  rows; `caffeport.streaming.blocks.write_placed` joins rows that meet in the target
  into one vectored write. Rows that follow each other in the target (a
  plain transpose) go out as one run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from caffeport.io.mapped import SourceFile, pread_source, release_pages

#: rows (of the source, as stored) per tile: target rows are split into fragments only beyond this
TILE_ROWS = 16384
#: bytes of source per tile (one staging buffer, reused), unless rows of MIN_READ_BYTES need more
TILE_BYTES = 32 << 20
#: the least each pread copies (a tile of 16384 rows then stages 64 MiB)
MIN_READ_BYTES = 4096
#: bytes of target per transposed piece handed out
PIECE_BYTES = 8 << 20
#: source rows per strip of the in-cache transpose: 8 for pieces of 256 columns or more (measured best on
#: VGG16's fc6, whose pieces have about 500), more for narrower pieces (those of tall sources), up to 64, so
#: each numpy call copies about _STRIP_ELEMENTS values (measured: 57 rows beat 28 and 8 on 14719-row tiles)
_STRIP = 8
_STRIP_ELEMENTS = 8192
#: a reordered target goes out row by row, so its rows must be long enough to be worth a write each
_MIN_ROW_BYTES = 4096


@dataclass(frozen=True)
class TransposedMatrix:
    """A view whose target C order is the transpose of a C-contiguous (rows, cols) source region.

    ``target_rows[k]`` is the target row that source column ``k`` becomes,
    or None when that is ``k`` itself (a plain transpose).
    """

    source: np.ndarray
    target_rows: np.ndarray | None

    @property
    def rows(self) -> int:
        return int(self.source.shape[0])

    @property
    def cols(self) -> int:
        return int(self.source.shape[1])


def as_transposed(view: np.ndarray) -> TransposedMatrix | None:
    """The view as a transposed matrix, if its last axis is the source's outermost and the rest fill source rows.

    That is the shape of a Dense kernel (``W.T``) and of a Dense kernel with
    the flatten reorder. Other views (flipped, a last axis of one, or
    reordered with target rows under 4 KiB such as HWIO convolution kernels,
    whose rows are better reordered in memory) return None and take the
    general block path in `caffeport.streaming.blocks`.
    """
    if view.ndim < 2 or view.size == 0 or any(s <= 0 for s, n in zip(view.strides, view.shape) if n > 1):
        return None
    item = view.itemsize
    rows = view.shape[-1]
    cols = view.size // rows
    if rows < 2 or cols < 2 or view.strides[-1] != cols * item:
        return None
    # the other axes, fastest first in the source, must fill one source row exactly
    axes = sorted((a for a in range(view.ndim - 1) if view.shape[a] != 1), key=lambda a: view.strides[a])
    expected = item
    for axis in axes:
        if view.strides[axis] != expected:
            return None
        expected *= view.shape[axis]
    ones = [a for a in range(view.ndim - 1) if view.shape[a] == 1]
    order = [*ones, *reversed(axes)]  # the other axes, slowest first in the source
    source = view.transpose([view.ndim - 1, *order]).reshape(rows, cols)
    if _address(source) != _address(view):  # reshape had to copy: cannot happen after the checks above
        return None
    if axes == sorted(axes, reverse=True):
        return TransposedMatrix(source, None)
    if rows * item < _MIN_ROW_BYTES:
        return None
    target_rows = np.arange(cols, dtype=np.int64).reshape(view.shape[:-1]).transpose(order).reshape(-1)
    return TransposedMatrix(source, target_rows)


def transposed_runs(matrix: TransposedMatrix, dtype: Any, *,
                    release_source: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(element offset in the target, contiguous 1-D run in dtype)`` covering the whole target, tile by tile.

    Runs are views of pieces, never of the source or the reused staging
    buffer, so a consumer may hold on to them (a writer thread does): a
    piece's buffer is reused only once no run of it is referenced any more
    (`PiecePool`).
    With ``release_source`` a memory-mapped source's pages are released
    after each band of source rows.
    """
    target = np.dtype(dtype)
    source = matrix.source
    rows, cols = matrix.rows, matrix.cols
    band = min(rows, TILE_ROWS)
    tile_cols = _even_share(cols, max(TILE_BYTES // (band * source.itemsize), MIN_READ_BYTES // source.itemsize))
    opened = pread_source(source)
    staging = np.empty((band, tile_cols), dtype=source.dtype) if opened is not None else None
    pieces = PiecePool()
    for r0 in range(0, rows, band):
        height = min(band, rows - r0)
        for c0 in range(0, cols, tile_cols):
            width = min(tile_cols, cols - c0)
            if opened is not None and staging is not None:
                tile = _pread_tile(opened, source, staging, r0, height, c0, width)
            else:
                tile = source[r0:r0 + height, c0:c0 + width]
            piece_cols = _even_share(width, PIECE_BYTES // (height * target.itemsize))
            for p0 in range(0, width, piece_cols):
                block = tile[:, p0:p0 + piece_cols]
                piece = _transpose(block, pieces.take((block.shape[1], block.shape[0]), target))
                yield from _piece_runs(matrix, piece, r0, c0 + p0)
        if release_source:
            release_pages(source[r0:r0 + height])


def _even_share(total: int, most: int) -> int:
    """The smallest step of at most ``most`` that splits ``total`` into parts of near-equal size."""
    parts = -(-total // max(1, most))
    return -(-total // parts)


def _pread_tile(opened: SourceFile, source: np.ndarray, staging: np.ndarray,
                r0: int, height: int, c0: int, width: int) -> np.ndarray:
    """Source rows ``r0..r0+height``, columns ``c0..c0+width``, read into ``staging`` one pread per row."""
    item = source.itemsize
    row_stride = source.strides[0]
    staged_row = staging.shape[1] * item
    segment = width * item
    raw = memoryview(staging).cast("B")
    position = opened.offset + r0 * row_stride + c0 * item
    for r in range(height):
        opened.read_into(raw[r * staged_row:r * staged_row + segment], position)
        position += row_stride
    return staging[:height, :width]


class PiecePool:
    """Buffers for transposed pieces, each handed out again once nothing holds a view of it any more.

    A conversion streams hundreds of 8 MiB pieces through a writer thread. A
    fresh ``np.empty`` for each costs the kernel a zeroed (huge) page for
    every page of it, every time: 7% of a VGG16 conversion's CPU time,
    measured. The pieces in flight are bounded (the writer's queue), so a few
    buffers, reused, serve them all. A buffer is free when its reference
    count says only this pool holds it: every run handed out is a numpy view
    whose ``base`` is the buffer, so a consumer holding on to any run (a
    batch waiting in a queue, a memoryview being written) keeps it busy, and
    reusing it can never change bytes someone still has to write. Past
    ``limit`` busy buffers a piece is allocated fresh and left to the
    garbage collector, as before.
    """

    def __init__(self, limit: int = 8, capacity: int | None = None) -> None:
        self.limit = limit
        self.capacity = PIECE_BYTES if capacity is None else capacity
        self.buffers: list[np.ndarray] = []

    def take(self, shape: tuple[int, int], dtype: np.dtype[Any]) -> np.ndarray:
        """An uninitialised C-contiguous ``shape`` array of ``dtype``, in a free pooled buffer if there is one."""
        nbytes = shape[0] * shape[1] * dtype.itemsize
        if nbytes > self.capacity:
            return np.empty(shape, dtype=dtype)
        for index in range(len(self.buffers)):
            # references: the list's and getrefcount's own argument; any more is a view someone holds
            if sys.getrefcount(self.buffers[index]) <= 2:
                return self.buffers[index][:nbytes].view(dtype).reshape(shape)
        if len(self.buffers) >= self.limit:
            return np.empty(shape, dtype=dtype)
        self.buffers.append(np.empty(self.capacity, dtype=np.uint8))
        return self.buffers[-1][:nbytes].view(dtype).reshape(shape)


def _transpose(tile: np.ndarray, piece: np.ndarray) -> np.ndarray:
    """``tile.T`` copied into ``piece`` (C-contiguous, of the target dtype) a strip of source rows at a time."""
    height, width = tile.shape
    strip = _STRIP if width >= 256 else min(64, max(_STRIP, _STRIP_ELEMENTS // width))
    for s in range(0, height, strip):
        piece[:, s:s + strip] = tile[s:s + strip].T
    return piece


def _piece_runs(matrix: TransposedMatrix, piece: np.ndarray, r0: int, k0: int) -> Iterator[tuple[int, np.ndarray]]:
    """The target runs in ``piece``: target rows for source columns ``k0..`` (or their fragments from ``r0``)."""
    rows = matrix.rows
    if matrix.target_rows is None and piece.shape[1] == rows:
        yield k0 * rows, piece.reshape(-1)
        return
    count = piece.shape[0]
    targets = range(k0, k0 + count) if matrix.target_rows is None else matrix.target_rows[k0:k0 + count].tolist()
    for run, target_row in zip(piece, targets):
        yield target_row * rows + r0, run


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])
