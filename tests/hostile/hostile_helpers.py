"""Helpers shared by the hostile-input tests: a hang guard and a protobuf walker for mutations."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

import caffeport
from caffeport.errors import CaffeportError, InternalDecodeError

#: seconds one read may take before it counts as a hang: minutes, since the machine is shared, 2 cores and noisy
#: (a hang is forever; a loaded machine once took 10 s over a read that takes 1 s alone)
HANG_SECONDS = 180


@contextmanager
def hang_guard(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail (instead of hanging the suite) if the block runs for ``seconds``: a generous limit, not a timing."""

    def timeout(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no result within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_clean(read: Any, *args: Any, **kwargs: Any) -> object | None:
    """Call a reader: its result, or None for a clean `CaffeportError`; anything else fails the test.

    The entry points' `InternalDecodeError` (a stray ValueError & co. caught at the top) is a failure
    too: it means a check is missing.
    """
    try:
        with hang_guard():
            result = read(*args, **kwargs)
    except InternalDecodeError as exc:
        raise AssertionError(f"reached the unchecked-input guard: {exc!r} from {exc.__cause__!r}") from exc
    except CaffeportError:
        return None
    if isinstance(result, caffeport.Net):
        assert_valid_net(result)
    elif isinstance(result, np.ndarray):
        assert result.size == int(np.prod(result.shape, dtype=object))
    return result


def assert_valid_net(net: caffeport.Net) -> None:
    for layer in net.layers:
        assert isinstance(layer, caffeport.Layer)
        assert isinstance(layer.name, str) and isinstance(layer.type, str)
        assert all(isinstance(name, str) for name in layer.bottoms + layer.tops)
        for blob in layer.blobs:
            assert isinstance(blob, np.ndarray) and blob.dtype.kind == "f"
            assert blob.size == int(np.prod(blob.shape, dtype=object))
        assert len(layer.top_shapes) == len(layer.tops)


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int] | None:
    result = shift = 0
    for i in range(10):
        if pos + i >= end:
            return None
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    return None


def varint_positions(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[int, int]]:
    """(start, end) of the tags, lengths and varint values of a protobuf message, nested ones included."""
    end = len(data) if end is None else end
    found: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        tag = read_varint(data, pos, end)
        if tag is None:
            break
        key, after = tag
        found.append((pos, after))
        wire = key & 7
        if wire == 0:
            value = read_varint(data, after, end)
            if value is None:
                break
            found.append((after, value[1]))
            pos = value[1]
        elif wire == 2:
            length = read_varint(data, after, end)
            if length is None or length[1] + length[0] > end:
                break
            found.append((after, length[1]))
            if depth < 4 and length[0] > 1 and key >> 3 != 5:  # not into packed float data
                found += varint_positions(data, length[1], length[1] + length[0], depth + 1)
            pos = length[1] + length[0]
        elif wire in (1, 5):
            pos = after + (8 if wire == 1 else 4)
        else:
            break
    return found
