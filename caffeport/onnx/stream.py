"""Writing an ONNX model whose weights are streamed from the caffemodel: one ``.onnx``, or one plus ``.onnx.data``.

`caffeport.onnx.export.to_onnx` with ``lazy`` builds the ModelProto with
every weight initializer left empty (dims and type only) and hands back the
map name -> weight view (`caffeport.onnx.graph.GraphBuilder.weight`). Here
the file is written without ever holding the weights: memory stays at a few
blocks of `caffeport.streaming.blocks.BLOCK_BYTES` whatever the model's size.

One self-contained file (below 2 GiB, protobuf's limit for one message): the
bytes a ``SerializeToString`` of the full model would give, up to the order
of fields, which protobuf parsers accept in any order. The ModelProto without
its graph is serialized first, then the graph field (ModelProto field 7) with
its length, computed up front: the graph without initializers, then every
initializer (GraphProto field 5, a repeated field: its entries may come after
the graph's other fields and keep their order). A weight's entry is its
TensorProto header (dims, type, name) followed by the ``raw_data`` field
(TensorProto field 9) whose length prefix is written before the values are
streamed in, block by block, from the memory map.

External data (above 2 GiB, or when asked): ONNX's own layout. Every weight
of `EXTERNAL_THRESHOLD` bytes or more lives in the data file at an offset
aligned to `ALIGNMENT` bytes, its TensorProto saying ``data_location =
EXTERNAL`` and ``location`` (the data file's final basename, so the pair
works from any folder), ``offset`` and ``length``; the small ones stay in
the ``.onnx``, as ``onnx.external_data_helper`` does.

Either way the model is checked with ``onnx.checker.check_model(path,
full_check=True)`` before the output is published: the structure goes to a
scratch folder in its external-data form (the weights' values are not what
the checker reads, only their dims and types, which shape inference uses),
so the check costs no memory for the weights even for a single file, where
the path-based checker would parse the whole file. The check runs in a child
Python process (`Check`), started before the weights are written and waited
for after, so that on two cores it runs beside the writing. The child calls
onnx's C++ checker, the one ``onnx.checker`` wraps, without importing the onnx
package (`_LOAD_CHECKER`: the import takes over a second, its ml_dtypes
alone 0.9 s, longer than writing a 553 MB VGG16; benchmarks/RESULTS.md, "ONNX
export"). Without a usable interpreter for the child, or where that core
cannot be reached, the check runs in this process with ``onnx.checker``. What it does not check, the size of each
``raw_data``, is right by construction and counted as the values are
written. A checker failure is an internal error (``AssertionError``) and
nothing is published.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from caffeport.codec.wire import LENGTH, encode_delimited, encode_key, encode_varint
from caffeport.io.output import PathLike, atomic_output
from caffeport.onnx.proto import EXTERNAL, FIELDS, FLOAT, Entry, Model, Tensor, require_onnx
from caffeport.streaming.blocks import Blob, Progress, iter_placed, pwrite_all, stream_placed

#: protobuf cannot parse a message of 2 GiB or more: past it the weights go to a data file (the limit
#: `caffeport.onnx.export.MAX_PROTO_BYTES` puts on an in-memory model; not imported: export imports this module)
MAX_PROTO_BYTES = 2**31 - 1
#: external tensors start at multiples of this (a page: the data file can be memory-mapped tensor by tensor)
ALIGNMENT = 4096
#: weights smaller than this stay inside the .onnx file (onnx's own default size_threshold)
EXTERNAL_THRESHOLD = 1024
#: the suffix of the data file, after the model file's whole name (``model.onnx`` -> ``model.onnx.data``)
DATA_SUFFIX = ".data"
#: the dtype ONNX's raw_data holds float tensors in
FLOAT32_LE = np.dtype("<f4")

ProgressCallback = Callable[[int, int, int, int], None]

_MODEL_GRAPH = FIELDS["ModelProto"]["graph"]
_GRAPH_INITIALIZER = FIELDS["GraphProto"]["initializer"]
_TENSOR_RAW_DATA = FIELDS["TensorProto"]["raw_data"]


def _nbytes(blob: Blob) -> int:
    return 4 * math.prod(int(d) for d in blob.shape)


def fill(model: Model, lazy: dict[str, Blob]) -> None:
    """Copy every lazy weight into its initializer's ``raw_data`` (the in-memory ``to_onnx`` model)."""
    for tensor in model.graph.initializer:
        blob = lazy.get(tensor.name)
        if blob is not None:
            tensor.raw_data = np.asarray(blob, dtype=FLOAT32_LE).tobytes()


def single_file_size(model: Model, lazy: dict[str, Blob]) -> int:
    """The size of the self-contained file (`write_single`'s), computed without serializing the weights."""
    prefix, entries = _single_layout(model, lazy)
    return len(prefix) + sum(len(header) + (_nbytes(blob) if blob is not None else 0) for header, blob in entries)


def needs_external(model: Model, lazy: dict[str, Blob], external_data: bool | None) -> bool:
    """Whether the model is written with a data file: asked for (``True``), or one file would pass protobuf's limit.

    ``False`` is the same as ``None``: a model past 2 GiB cannot be one file that anything parses.
    """
    return bool(external_data) or single_file_size(model, lazy) > MAX_PROTO_BYTES


def data_path_for(path: PathLike) -> Path:
    """The external data file beside the model file ``path``: its whole name plus ``.data``."""
    path = Path(path)
    return path.with_name(path.name + DATA_SUFFIX)


def write(model: Model, lazy: dict[str, Blob], path: PathLike, *, external_data: bool | None = None,
          final_path: PathLike | None = None, force: bool = False, inputs: Iterable[PathLike | None] = (),
          progress: ProgressCallback | None = None) -> Path | None:
    """Write ``model`` (its lazy weights streamed) to ``path``; the data file it published beside, if any.

    ``path`` may be a temporary file that the caller renames to
    ``final_path`` (`caffeport.convert`): the data file is named after
    ``final_path`` (``model.onnx.data``), which is also what the model's
    ``location`` entries say, and is written through `atomic_output` of its
    own (never over ``inputs``; over an existing file only with ``force``),
    published once it and the model file are complete, just before the
    caller renames the model file into place; the caller removes it should
    that rename fail (`caffeport.convert` does).
    """
    final = Path(final_path) if final_path is not None else Path(path)
    if not needs_external(model, lazy, external_data):
        with Check(model, lazy, None) as check:
            write_single(model, lazy, path, progress)
            check.wait()
        return None
    target = data_path_for(final)
    placed = to_external(model, lazy, target.name)
    with Check(model, {}, target.name) as check, atomic_output(target, force=force, inputs=inputs) as data_tmp:
        write_external(model, placed, path, data_tmp, progress)
        check.wait()  # before the data file is published
    return target


# --------------------------------------------------------------------------
# the check


#: how the child reaches onnx's C++ checker without the onnx package. ``onnx.checker.check_model(path, ...)`` is
#: a thin wrapper around ``onnx.onnx_cpp2py_export.checker.check_model_path``, but ``import onnx`` takes over a
#: second (ml_dtypes' extension alone 0.9 s, measured), longer than writing a VGG16, while the extension alone
#: loads in 10 ms. ``checker_core()`` is None when onnx is not installed or is laid out otherwise.
_LOAD_CHECKER = """
import importlib.machinery
import importlib.util
import os
import sys


def checker_core():
    spec = importlib.util.find_spec("onnx")
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or []:
        for name in sorted(os.listdir(folder)):
            if name.startswith("onnx_cpp2py_export.") and name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                loader = importlib.machinery.ExtensionFileLoader("onnx.onnx_cpp2py_export", os.path.join(folder, name))
                module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
                loader.exec_module(module)
                return module
    return None
"""
#: the child: onnx's checker with full_check (shape inference) on the structure's path; exit 3 with the reason
#: when it refuses, 4 when its C++ core cannot be reached or called so (then the parent checks with onnx.checker)
_CHECK_SCRIPT = _LOAD_CHECKER + """
try:
    core = checker_core()
    check = core.checker.check_model_path
    refusals = (core.checker.ValidationError, core.shape_inference.InferenceError)
except Exception:
    sys.exit(4)
try:
    check(sys.argv[1], True, False, False)  # full_check, skip_opset_compatibility_check, check_custom_domain
except refusals as exc:
    sys.stderr.write(str(exc))
    sys.exit(3)
except TypeError:  # another onnx's signature
    sys.exit(4)
"""
_REFUSED, _CHECK_HERE = 3, 4
#: the (empty) data file the checked structure's lazy weights point to, in the scratch folder
_SCRATCH_DATA = "weights.data"
#: how long the check may take before it counts as hung (it takes about a second)
CHECK_TIMEOUT_S = 900


def _checked_form(model: Model, lazy: dict[str, Blob]) -> Model:
    """``model`` with its ``lazy`` weights as external data in `_SCRATCH_DATA` (the model itself unchanged)."""
    initializers = []
    for tensor in model.graph.initializer:
        if tensor.name in lazy:
            tensor = Tensor(tensor.name, list(tensor.dims), FLOAT)
            _mark_external(tensor, _SCRATCH_DATA, 0, _nbytes(lazy[tensor.name]))
        initializers.append(tensor)
    graph = dataclasses.replace(model.graph, initializer=initializers)
    return dataclasses.replace(model, graph=graph)


def _refused(reason: str) -> AssertionError:
    return AssertionError(f"caffeport built an ONNX model that onnx's checker refuses: {reason}")


class Check:
    """``onnx.checker.check_model(path, full_check=True)`` on the model's structure, weights left out, in a child
    process from ``__enter__`` to `wait`; the child is killed if the block is left without waiting.

    The structure goes to a scratch folder with the ``lazy`` weights marked as
    external data (in an empty file: the checker only checks that the file
    exists) or, when ``location`` is given, as it is (already in that form).
    """

    def __init__(self, model: Model, lazy: dict[str, Blob], location: str | None) -> None:
        self.model = _checked_form(model, lazy) if lazy else model
        self.location = location or _SCRATCH_DATA
        self.child: subprocess.Popen[bytes] | None = None
        self.scratch: tempfile.TemporaryDirectory[str] | None = None
        self.path: Path | None = None

    def __enter__(self) -> Check:
        self.scratch = tempfile.TemporaryDirectory(prefix="caffeport-onnx-check-")
        folder = Path(self.scratch.name)
        (folder / self.location).touch()
        self.path = folder / "model.onnx"
        self.path.write_bytes(self.model.encode())
        if sys.executable:
            try:
                self.child = subprocess.Popen([sys.executable, "-c", _CHECK_SCRIPT, str(self.path)],
                                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE)
            except OSError:
                self.child = None
        return self

    def wait(self) -> None:
        """The checker's verdict: returns when it accepts, raises ``AssertionError`` when it refuses."""
        assert self.path is not None, "Check.wait outside its with block"
        child = self.child
        if child is not None:
            try:
                _, err = child.communicate(timeout=CHECK_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"onnx's checker did not finish in {CHECK_TIMEOUT_S} s") from None
            self.child = None  # reaped; interrupted above, `__exit__` kills and reaps it
            reason = err.decode("utf-8", "replace").strip()
            if child.returncode == 0:
                return
            if child.returncode == _REFUSED:
                raise _refused(reason)
            if child.returncode != _CHECK_HERE:
                raise AssertionError(f"onnx's checker failed (exit {child.returncode}): {reason[-2000:]}")
        run_checker(str(self.path))  # no child, or onnx's C++ checker not reachable there: here, with onnx

    def __exit__(self, *exc: object) -> None:
        if self.child is not None:  # left without a verdict (an error, Ctrl-C): the check is moot
            self.child.kill()
            self.child.communicate()
            self.child = None
        if self.scratch is not None:
            self.scratch.cleanup()


def run_checker(model: Any) -> None:
    """``onnx.checker.check_model(model, full_check=True)`` in this process (imports onnx): ``model`` an
    ``onnx.ModelProto`` (`caffeport.onnx.export.to_onnx`) or a file's path (`Check` without a child)."""
    onnx = require_onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise _refused(str(exc)) from exc


def _mark_external(tensor: Tensor, location: str, offset: int, length: int) -> None:
    tensor.data_location = EXTERNAL
    tensor.external_data = [Entry("location", location), Entry("offset", str(offset)), Entry("length", str(length))]


# --------------------------------------------------------------------------
# one self-contained file


def _single_layout(model: Model, lazy: dict[str, Blob]) -> tuple[bytes, list[tuple[bytes, Blob | None]]]:
    """The file as (everything before the first initializer, [(initializer header, its lazy weight or None)])."""
    graph_rest = model.graph.encode(initializers=False)
    entries: list[tuple[bytes, Blob | None]] = []
    for tensor in model.graph.initializer:
        blob = lazy.get(tensor.name)
        if blob is None:
            entries.append((encode_delimited(_GRAPH_INITIALIZER, tensor.encode()), None))
            continue
        n = _nbytes(blob)
        tensor_head = tensor.header() + encode_key(_TENSOR_RAW_DATA, LENGTH) + encode_varint(n)
        entries.append((encode_key(_GRAPH_INITIALIZER, LENGTH) + encode_varint(len(tensor_head) + n) + tensor_head,
                        blob))
    graph_size = len(graph_rest) + sum(len(header) + (_nbytes(b) if b is not None else 0) for header, b in entries)
    prefix = model.encode(graph=False) + encode_key(_MODEL_GRAPH, LENGTH) + encode_varint(graph_size) + graph_rest
    return prefix, entries


def write_single(model: Model, lazy: dict[str, Blob], path: PathLike, progress: ProgressCallback | None = None) -> None:
    """The whole model as one ``.onnx`` file at ``path``, the weights streamed into their ``raw_data`` fields."""
    prefix, entries = _single_layout(model, lazy)
    headers: list[tuple[int, bytes]] = [(0, prefix)]
    placed: list[tuple[int, Blob]] = []
    position = len(prefix)
    for header, blob in entries:
        headers.append((position, header))
        position += len(header)
        if blob is not None:
            placed.append((position, blob))
            position += _nbytes(blob)
    # the exporter's temporary file, or a new one (the Python API's ``write_onnx(net, path)``): never "r+b" alone
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+b") as handle:
        fd = handle.fileno()
        os.ftruncate(fd, position)
        for where, data in headers:
            pwrite_all(fd, memoryview(data), where)
        _stream(fd, placed, progress)
        os.fsync(fd)  # now, while the checker may still run (atomic_output's own fsync then finds it clean)


# --------------------------------------------------------------------------
# a model file and its external data file


def to_external(model: Model, lazy: dict[str, Blob], location: str) -> list[tuple[int, Blob]]:
    """Mark the large lazy weights as external data in ``location`` at aligned offsets; fill the small ones in.

    Returns the (data file offset, weight) pairs to write.
    """
    placed: list[tuple[int, Blob]] = []
    end = 0
    for tensor in model.graph.initializer:
        blob = lazy.get(tensor.name)
        if blob is None:
            continue
        n = _nbytes(blob)
        if n < EXTERNAL_THRESHOLD:
            tensor.raw_data = np.asarray(blob, dtype=FLOAT32_LE).tobytes()
            continue
        offset = -(-end // ALIGNMENT) * ALIGNMENT
        _mark_external(tensor, location, offset, n)
        placed.append((offset, blob))
        end = offset + n
    return placed


def write_external(model: Model, placed: list[tuple[int, Blob]], path: PathLike, data_path: PathLike,
                   progress: ProgressCallback | None = None) -> None:
    """The model (already `to_external`) to ``path`` and its weights to ``data_path`` at their offsets."""
    Path(path).write_bytes(model.encode())
    end = max((offset + _nbytes(blob) for offset, blob in placed), default=0)
    with open(data_path, "r+b") as handle:
        os.ftruncate(handle.fileno(), end)  # the alignment gaps read as zeros
        _stream(handle.fileno(), placed, progress)
        os.fsync(handle.fileno())  # now, while the checker may still run (as `write_single`)


# --------------------------------------------------------------------------


def _stream(fd: int, placed: list[tuple[int, Blob]], progress: ProgressCallback | None) -> None:
    """Write each weight's float32 values at its byte position, read from the map block by block."""
    counted = [0] * len(placed)

    def runs() -> Iterator[tuple[int, np.ndarray, int]]:
        for index, (position, blob) in enumerate(placed):
            for start, run in iter_placed(blob, dtype=FLOAT32_LE, release_source=True):
                counted[index] += run.size
                yield position + 4 * start, run, index

    report = Progress(progress, sum(_nbytes(blob) for _, blob in placed), len(placed))
    stream_placed(fd, runs(), report.on_batch)
    wrong = [i for i, (_, blob) in enumerate(placed) if 4 * counted[i] != _nbytes(blob)]
    if wrong:
        raise AssertionError(f"caffeport wrote {4 * counted[wrong[0]]} bytes of a {_nbytes(placed[wrong[0]][1])}-byte "
                             "weight into the ONNX file")


__all__ = ["ALIGNMENT", "EXTERNAL_THRESHOLD", "MAX_PROTO_BYTES", "Check", "data_path_for",
           "fill", "needs_external", "run_checker", "write", "write_external", "write_single"]
