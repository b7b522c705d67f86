"""Property: real model files with random damage read cleanly or not at all.

Hypothesis mutates real caffemodels, means and HDF5 snapshots (bit flips,
inserted, deleted and duplicated bytes, and a tag, length or value varint of
the original re-encoded with an interesting number) and real prototxts
(tokens deleted, duplicated, swapped or replaced by hostile ones). Whatever
comes out, reading gives a valid result or a clean `CaffeportError`: never
another exception, never the entry points' `InternalDecodeError` guard, never
a hang (a 10 s alarm per example; no timing is asserted otherwise).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import caffeport
from caffeport.codec.wire import encode_varint
from tests.conftest import models_dir
from tests.hostile.hostile_helpers import check_clean, varint_positions

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    max_examples=800)
INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 0x7F, 0x80, 2**31 - 1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1, 2**63,
               2**64 - 1]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="caffeport-props-"))
    yield directory
    shutil.rmtree(directory)


@cache
def _seeds(pattern: str, max_bytes: int) -> tuple[tuple[str, bytes, tuple[tuple[int, int], ...]], ...]:
    files = sorted(p for p in models_dir().rglob(pattern) if p.stat().st_size <= max_bytes)
    assert files, f"no {pattern} of at most {max_bytes} bytes in {models_dir()}"
    out = []
    for path in files:
        data = path.read_bytes()
        positions = () if data.startswith(b"\x89HDF") else tuple(varint_positions(data))
        out.append((path.name, data, positions))
    return tuple(out)


@st.composite
def mutated(draw: st.DrawFn, pattern: str, max_bytes: int) -> tuple[str, bytes]:
    """A seed file with 1-4 mutations; a varint re-encoding is applied first, while its position is valid."""
    name, data, positions = draw(st.sampled_from(_seeds(pattern, max_bytes)))
    buf = bytearray(data)
    if positions and draw(st.booleans()):
        start, end = draw(st.sampled_from(positions))
        value = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, 2**64 - 1)))
        encoded = encode_varint(value)
        if draw(st.integers(0, 9)) == 0:  # over-long encoding, 10 or 11 bytes
            encoded = bytes(b | 0x80 for b in encoded) + b"\x80" * (9 - len(encoded) + draw(st.integers(0, 1))) \
                + b"\x00"
        buf[start:end] = encoded
    for _ in range(draw(st.integers(0 if positions else 1, 4))):
        op = draw(st.sampled_from(["flip", "byte", "insert", "delete", "duplicate", "truncate"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and buf:
            buf[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x3A]))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 64))]
        elif op == "duplicate":
            chunk = buf[pos : pos + draw(st.integers(1, 256))]
            at = draw(st.integers(0, len(buf)))
            buf[at:at] = chunk * draw(st.integers(1, 4))
        elif op == "truncate":
            del buf[pos:]
    return name, bytes(buf)


@SETTINGS
@given(mutated("*.caffemodel", 64 * 1024))
def test_mutated_caffemodels(scratch: Path, case: tuple[str, bytes]) -> None:
    path = scratch / "m.caffemodel"
    path.write_bytes(case[1])
    check_clean(caffeport.read, path)
    check_clean(caffeport.read_blob, path)


@settings(SETTINGS, max_examples=400)
@given(mutated("*.caffemodel", 64 * 1024), st.sampled_from(["mtcnn/det1.prototxt", "resnet50-head-bn/test.prototxt",
                                                             "caffe-reference/c_deconv_prelu/deploy.prototxt"]))
def test_mutated_caffemodels_merged_with_a_prototxt(scratch: Path, case: tuple[str, bytes], deploy: str) -> None:
    path = scratch / "w.caffemodel"
    path.write_bytes(case[1])
    check_clean(caffeport.read, path, models_dir() / deploy)


@settings(SETTINGS, max_examples=300)
@given(mutated("*.binaryproto", 64 * 1024))
def test_mutated_means(scratch: Path, case: tuple[str, bytes]) -> None:
    path = scratch / "m.binaryproto"
    path.write_bytes(case[1])
    check_clean(caffeport.read_blob, path)
    check_clean(caffeport.read, path)


@settings(SETTINGS, max_examples=300)
@given(mutated("*.caffemodel.h5", 1 << 20))
def test_mutated_hdf5_snapshots(scratch: Path, case: tuple[str, bytes]) -> None:
    path = scratch / "m.caffemodel.h5"
    path.write_bytes(case[1])
    check_clean(caffeport.read, path)


_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|[A-Za-z_][A-Za-z0-9_]*|[-+]?[0-9][0-9A-Za-z.+-]*|\S')
HOSTILE_TOKENS = ["{", "}", "<", ">", "[", "]", ":", ",", ";", "layer", "layers", "input", "input_dim", "input_shape",
                  "name", "type", "top", "bottom", "include", "phase", "TRAIN", "-1", "0", "1e999", "-1e999", "nan",
                  "inf", "99999999999999999999999", "0x7fffffff", "4294967296", "1.5", '"\\377"', '"a/../../b"',
                  "'/abs'", "true", "#", "convolution_param { num_output: 0 kernel_size: 0 }",
                  "reshape_param { shape { dim: -1 dim: -1 } }", "input_param { shape { dim: 99999999999 } }",
                  "layers { layer { type: 'padding' pad: 1 } top: 'x' }", "inner_product_param { axis: 99 }",
                  "pooling_param { kernel_size: 0 stride: 0 }", "slice_param { slice_point: 99 }"]


@st.composite
def edited_prototxt(draw: st.DrawFn) -> str:
    paths = sorted(models_dir().rglob("*.prototxt"))
    text = draw(st.sampled_from(paths)).read_text()
    for _ in range(draw(st.integers(1, 4))):
        tokens = list(_TOKEN.finditer(text))
        if not tokens:
            break
        token = draw(st.sampled_from(tokens))
        start, end = token.span()
        op = draw(st.sampled_from(["delete", "replace", "duplicate", "insert", "swap"]))
        if op == "delete":
            text = text[:start] + text[end:]
        elif op == "replace":
            text = text[:start] + draw(st.sampled_from(HOSTILE_TOKENS)) + text[end:]
        elif op == "duplicate":
            text = text[:end] + " " + token.group() + text[end:]
        elif op == "insert":
            text = text[:start] + draw(st.sampled_from(HOSTILE_TOKENS)) + " " + text[start:]
        else:
            other = draw(st.sampled_from(tokens))
            first, second = sorted([token, other], key=lambda m: m.start())
            if first.end() <= second.start():
                text = (text[: first.start()] + second.group() + text[first.end() : second.start()] + first.group()
                        + text[second.end() :])
    return text


@settings(SETTINGS, max_examples=500)
@given(edited_prototxt())
def test_edited_prototxts(scratch: Path, text: str) -> None:
    path = scratch / "p.prototxt"
    path.write_text(text)
    check_clean(caffeport.read, None, path)
    check_clean(caffeport.read, None, path, phase="TRAIN")


@settings(SETTINGS, max_examples=200)
@given(edited_prototxt())
def test_edited_prototxts_merged_with_weights(scratch: Path, text: str) -> None:
    path = scratch / "q.prototxt"
    path.write_text(text)
    check_clean(caffeport.read, models_dir() / "mtcnn" / "det1.caffemodel", path)
