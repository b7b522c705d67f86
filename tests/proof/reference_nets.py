"""Shared pieces of the numeric proof tests: model paths, inputs, tolerances and
the ground truth for models without Caffe's own outputs (`caffe_forward`, which
is `caffeport.run`).

No keras or torch here: both test modules import this one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import caffeport
from caffeport.ir import Net
from tests.conftest import models_dir

#: caffe-reference models with Caffe's own per-layer outputs
REFERENCE_MODELS = ["a_lenet", "b_resnet_block", "c_deconv_prelu", "d_grouped", "e_recurrent"]
#: MTCNN nets: real trained weights, no reference outputs
MTCNN_MODELS = ["det1", "det2", "det3", "det4"]

#: largest accepted relative error: max |got - want| / max |want|
RTOL = 1e-4

#: Caffe's BatchNorm eps per layer, as written in b_resnet_block's deploy.prototxt
B_RESNET_EPS = {
    "bn_conv0": 1e-5,
    "bn_res1_a": 1e-5,
    "bn_res1_b": 1e-3,
    "bn_res2_a": 1e-5,
    "bn_res2_b": 1e-5,
    "bn_res2_proj": 1e-5,
}


# ---------------------------------------------------------------- files


def model_files(name: str) -> tuple[Path, Path]:
    """(caffemodel, prototxt) of a caffe-reference model or an MTCNN net."""
    root = models_dir()
    if name in MTCNN_MODELS:
        return root / "mtcnn" / f"{name}.caffemodel", root / "mtcnn" / f"{name}.prototxt"
    folder = root / "caffe-reference" / name
    return folder / f"{name}.caffemodel", folder / "deploy.prototxt"


def reference_inputs(name: str) -> dict[str, np.ndarray]:
    """The inputs Caffe was fed, by net input name (Caffe layout)."""
    folder = models_dir() / "caffe-reference" / name
    if (folder / "inputs.npz").is_file():
        with np.load(folder / "inputs.npz") as z:
            return {key: z[key] for key in z.files}
    return {"data": np.load(folder / "input.npy")}


def reference_outputs(name: str) -> dict[str, np.ndarray]:
    """Caffe's ``<layer>__<top>`` outputs right after each layer ran."""
    with np.load(models_dir() / "caffe-reference" / name / "outputs_per_layer.npz") as z:
        return {key: z[key] for key in z.files}


def mtcnn_input(net: Net, batch: int = 2, seed: int = 20240601) -> dict[str, np.ndarray]:
    """A fixed pseudo-image in [-1, 1] (MTCNN's (x - 127.5) / 128 range) for each net input."""
    rng = np.random.default_rng(seed)
    return {
        blob: rng.uniform(-1.0, 1.0, size=(batch, *shape[1:])).astype(np.float32) for blob, shape in net.inputs.items()
    }


# ---------------------------------------------------------------- comparing


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (max |want| floored at 1e-6)."""
    got64 = np.asarray(got, dtype=np.float64)
    want64 = np.asarray(want, dtype=np.float64)
    scale = max(float(np.max(np.abs(want64))) if want64.size else 0.0, 1e-6)
    return float(np.max(np.abs(got64 - want64))) / scale if want64.size else 0.0


def assert_close(key: str, got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    """Fail naming ``key`` when shapes differ or the relative error exceeds ``rtol``."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{key}: shape {got.shape}, expected {want.shape}"
    assert np.all(np.isfinite(got)), f"{key}: non-finite values in the output"
    err = rel_error(got, want)
    if err > rtol:
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        where = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise AssertionError(
            f"{key}: relative error {err:.3g} > {rtol:g} (max abs diff {diff.max():.4g} at {where}: "
            f"got {got[where]:.6g}, expected {want[where]:.6g}; max |expected| {np.max(np.abs(want)):.4g})"
        )


def assert_all_close(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], rtol: float = RTOL) -> None:
    """Every key of ``want`` must be in ``got`` and match; all failures are listed together."""
    missing = sorted(set(want) - set(got))
    assert not missing, f"the mirror model gives no output for: {missing}"
    failures = []
    for key in want:
        try:
            assert_close(key, got[key], want[key], rtol)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def add_split_copies(outputs: dict[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Fill in Caffe's auto-inserted Split outputs (copies of one blob), which no mirror model has.

    Caffe names the split of blob ``B`` after layer ``L`` ``B_L_<i>_split``; its tops are that
    blob as ``L`` left it, i.e. the value under ``L__B``.
    """
    for key in expected:
        layer = key.split("__", 1)[0]
        if key in outputs or not layer.endswith("_split"):
            continue
        sources = [
            k
            for k in outputs
            if re.fullmatch(re.escape(f"{k.split('__', 1)[1]}_{k.split('__', 1)[0]}_") + r"\d+_split", layer)
        ]
        if len(sources) == 1:
            outputs[key] = outputs[sources[0]]


def to_nchw(x: np.ndarray) -> np.ndarray:
    """NHWC -> NCHW for 4-D arrays; anything else unchanged."""
    return np.transpose(x, (0, 3, 1, 2)) if x.ndim == 4 else x


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC for 4-D arrays; anything else unchanged."""
    return np.transpose(x, (0, 2, 3, 1)) if x.ndim == 4 else x


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int = 0) -> int:
    """Caffe's pooled size: rounded up, minus the last window when it starts in the padding."""
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def stream_segments(cont: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per stream (column of the (T, N) ``cont``), the [start, stop) time ranges between state resets."""
    steps, streams = cont.shape
    segments = []
    for n in range(streams):
        starts = sorted({0} | {t for t in range(steps) if cont[t, n] == 0})
        stops = [*starts[1:], steps]
        segments.append(list(zip(starts, stops)))
    return segments


# ---------------------------------------------------------------- the reference forward


def caffe_forward(net: Net, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`caffeport.run` with every layer's tops, keyed ``<layer>__<top>`` as caffe-reference's outputs_per_layer.

    The reference forward is checked against Caffe's own outputs on every
    caffe-reference model (test_caffe_numpy_reference.py) and against OpenCV 4's
    Caffe runtime (tests/oracles); here it is the ground truth for models that
    come without Caffe's outputs (MTCNN).
    """
    outputs = caffeport.run(net, inputs, all_layers=True)
    return {key.replace("/", "__", 1): value for key, value in outputs.items() if "/" in key}
