"""`writeback_while_writing` starts the disk early from a thread of its own, and never changes what is written."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from caffeport import output
from caffeport.output import atomic_output, writeback_while_writing


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's; elsewhere nothing is started")
def test_writeback_runs_beside_the_writer_and_stops_with_the_block(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert output._sync_file_range_available(), "Linux has sync_file_range; it must be found through ctypes"
    calls: list[str] = []
    real = output._start_writeback

    def recording(fd: int) -> bool:
        calls.append(threading.current_thread().name)
        return real(fd)

    monkeypatch.setattr(output, "_start_writeback", recording)
    payload = os.urandom(1 << 20)
    before = set(threading.enumerate())
    with atomic_output(tmp_path / "out.bin") as tmp, open(tmp, "wb") as handle:
        for start in range(0, len(payload), 64 << 10):
            handle.write(payload[start:start + (64 << 10)])
            handle.flush()
            time.sleep(0.02)  # the writer takes a while: about three writeback intervals in all
    assert calls and set(calls) == {"caffeport-writeback"}, "writeback is started, and never by the writer"
    assert set(threading.enumerate()) <= before, "the writeback thread has ended with the block"
    assert (tmp_path / "out.bin").read_bytes() == payload


def test_without_sync_file_range_nothing_is_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "_sync_file_range", False)
    before = threading.active_count()
    with open(tmp_path / "out.bin", "wb") as handle, writeback_while_writing(handle.fileno(), interval=0.001):
        assert threading.active_count() == before
        handle.write(b"x" * 10)
    assert (tmp_path / "out.bin").read_bytes() == b"x" * 10
