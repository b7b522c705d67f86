"""What the npz, safetensors, flax and ir format tests share: the caffe-reference models, converting, comparing.

Plain numpy and caffeport only (caffeport imports no optional package until it writes), so that a missing
optional framework stops only the tests of the format that needs it: each test_<format>_format.py imports its
own framework (torch and safetensors, flax and jax, msgpack) and nothing else optional.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import caffeport
from caffeport.exporters import ExportOptions, load_exporters, msgpack_stream, safetensors
from caffeport.exporters import npz as npz_format
from caffeport.ir import Layer, Net
from tests.conftest import models_dir
from tests.proof.reference_nets import reference_inputs, reference_outputs

#: the caffe-reference models with Caffe's outputs; a_lenet_v1 holds a_lenet's weights in V1 and gives its outputs
REFERENCE = ["a_lenet", "a_lenet_v1", "b_resnet_block", "c_deconv_prelu", "d_grouped", "e_recurrent"]
_OUTPUTS_OF = {"a_lenet_v1": "a_lenet"}
#: a real model mixing fp16 and float32 blobs
SEGFREE_FP16 = ("hyperlpr-segfree-fp16", "SegmenationFree-Inception.caffemodel")
#: the writers' block sizes tried on the odd blobs: a few bytes (every blob split), and the real default
ODD_CHUNK_BYTES = [5, 16 * 1024 * 1024]


def reference_dir() -> Path:
    return models_dir() / "caffe-reference"


def reference_files(name: str) -> tuple[Path, Path]:
    """(caffemodel, deploy prototxt) of a caffe-reference model; fails (never skips) when they are missing."""
    folder = reference_dir() / name
    models = sorted(folder.glob("*.caffemodel"))
    prototxts = sorted(folder.glob("deploy*.prototxt"))
    assert len(models) == 1 and len(prototxts) == 1, f"{folder}: expected one caffemodel and one deploy prototxt"
    return models[0], prototxts[0]


def caffe_outputs(name: str) -> dict[str, np.ndarray]:
    """Caffe's own per-layer outputs for a caffe-reference model (a_lenet's for a_lenet_v1)."""
    return reference_outputs(_OUTPUTS_OF.get(name, name))


def caffe_inputs(name: str) -> dict[str, np.ndarray]:
    """The inputs Caffe was fed for `caffe_outputs`."""
    return reference_inputs(_OUTPUTS_OF.get(name, name))


def convert_reference(name: str, tmp_path: Path, fmt: str,
                      backend: str | None = None) -> tuple[Path, caffeport.ConvertResult]:
    """``caffeport.convert`` of a caffe-reference model with its deploy prototxt; the output path and the result."""
    caffemodel, prototxt = reference_files(name)
    out = tmp_path / f"{name}.{fmt}"
    return out, caffeport.convert(caffemodel, prototxt, out, format=fmt, backend=backend)


def segfree_fp16() -> Path:
    return models_dir().joinpath(*SEGFREE_FP16)


def write_with(net: Net, path: Path, fmt: str) -> Path:
    """``net`` written by the ``fmt`` exporter itself (no transform), at ``path``."""
    load_exporters()[fmt].write(net, path, ExportOptions())
    return path


def as_written(layer: Layer, blob: Any) -> np.ndarray:
    """What the writers store for a transformed blob: floats at least float32 once a backend converted the layer."""
    array = np.asarray(blob)
    if layer.framework_class and array.dtype.kind == "f":
        return array.astype(np.promote_types(array.dtype, np.float32))
    return array


def same_bits(got: np.ndarray, want: Any, what: str) -> None:
    """``got`` has ``want``'s dtype, shape and bytes (NaNs included)."""
    want = np.asarray(want)  # a lazy blob (caffeport.streaming.blocks.Reshaped) too
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.tobytes() == want.tobytes(), f"{what}: values differ"


def assert_widened_to_float32(result: caffeport.ConvertResult, arrays: dict[str, np.ndarray]) -> None:
    """Every float written is float32, although the transformed net still holds fp16 views (not vacuous)."""
    floats = {k: a.dtype for k, a in arrays.items() if not k.endswith("num_batches_tracked")}
    assert floats and set(floats.values()) == {np.dtype(np.float32)}
    conv = next(la for la in result.net if la.framework_class.startswith("Conv") and la.blobs)
    assert np.dtype(conv.blobs[0].dtype) == np.float16  # so the check above is not vacuous


def odd_net() -> Net:
    """Blobs the writers must stream right: transposed, big-endian, fp16, float64, int32, 0-d, empty."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    blobs = [base.T, np.arange(6, dtype=">f4").reshape(2, 3), np.linspace(-1, 1, 7, dtype=np.float16),
             np.array([1e-300, 3.5]), np.array([-3, 7], dtype=np.int32), np.array(2.5, dtype=np.float32),
             np.zeros((0, 3), dtype=np.float32)]
    return Net(name="odd", layers=[Layer("odd", "Parameter", tops=["odd"], blobs=blobs)])


def little_endian(blob: np.ndarray) -> np.ndarray:
    """The values of ``blob`` in little-endian order, as every format stores them."""
    return np.asarray(blob, dtype=blob.dtype.newbyteorder("<"))


def use_chunk_bytes(monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    """Every streaming writer hands over at most ``chunk_bytes`` at once."""
    monkeypatch.setattr(npz_format, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(safetensors, "CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(msgpack_stream, "CHUNK_BYTES", chunk_bytes)


def duplicate_names_net() -> Net:
    """Two layers named 'a': the name-keyed formats must refuse it."""
    one = np.zeros(2, dtype=np.float32)
    return Net(layers=[Layer("a", "Bias", blobs=[one]), Layer("a", "Bias", blobs=[one])])
