"""`writeback_while_writing` starts the disk early from a thread of its own, and never changes what is written."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from caffeport.io import output
from caffeport.io.output import atomic_output, writeback_while_writing


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


# --------------------------------------------------------------------------
# Ctrl-C (issue 13): an interrupt hidden in another error, signals landing in other threads


def test_an_interrupt_hidden_in_an_errnoless_oserror_stays_an_interrupt(tmp_path: Path) -> None:
    """h5py closing a file a Ctrl-C left half-made raises an errno-less OSError whose context is the interrupt.

    That used to become an OutputError ("cannot write it"), exit 1; it must
    stay a KeyboardInterrupt (exit 130) and leave nothing in the directory.
    """
    with pytest.raises(KeyboardInterrupt), atomic_output(tmp_path / "w.h5") as tmp:
        tmp.write_bytes(b"half a file")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("Unable to synchronously close file (file close degree doesn't match)")  # noqa: B904
    assert list(tmp_path.iterdir()) == []


def test_a_real_write_error_is_still_an_output_error(tmp_path: Path) -> None:
    """The control: an errno-less OSError with no interrupt behind it is the output's write error."""
    from caffeport.errors import OutputError

    with pytest.raises(OutputError, match="cannot write it"), atomic_output(tmp_path / "w.h5"):
        raise OSError("a writer's short write")
    assert list(tmp_path.iterdir()) == []


def test_interruption_follows_cause_and_context() -> None:
    interrupt = KeyboardInterrupt()
    inner = ValueError("h5py")
    inner.__context__ = interrupt
    outer = OSError(28, "No space left on device")
    outer.__cause__ = inner
    assert output.interruption(outer) is interrupt
    looped = OSError("loop")
    looped.__context__ = ValueError("back")
    looped.__context__.__context__ = looped
    assert output.interruption(looped) is None
    exit_request = SystemExit(143)
    wrapped = RuntimeError("x")
    wrapped.__context__ = exit_request
    assert output.interruption(wrapped) is exit_request


def test_keras_h5_system_errors_give_back_the_interrupt(tmp_path: Path) -> None:
    """The keras-h5 writer's translation of h5py errors does not swallow a Ctrl-C behind one."""
    from caffeport.exporters.keras_h5 import _system_errors

    with pytest.raises(KeyboardInterrupt), _system_errors(tmp_path / "w.h5"):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("Not a location (invalid object ID)")  # noqa: B904


def test_convert_cli_exits_130_when_the_writer_hides_a_ctrl_c(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole CLI on a real model: the keras-h5 writer fails the way h5py does after a Ctrl-C."""
    from caffeport import cli
    from caffeport.exporters import load_exporters
    from tests.conftest import models_dir

    def interrupted_h5py_write(net: object, path: Path, options: object) -> None:
        path.write_bytes(b"\x89HDF\r\n\x1a\n half")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError("Unable to close file (errno-less, as h5py reports it)")  # noqa: B904

    exporters = load_exporters()
    monkeypatch.setitem(exporters, "keras-h5", dataclasses.replace(exporters["keras-h5"],
                                                                   write=interrupted_h5py_write))
    folder = models_dir() / "caffe-reference" / "a_lenet"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code = cli.main(["convert", str(folder / "a_lenet.caffemodel"), "-p", str(folder / "deploy.prototxt"),
                     "-o", str(out_dir / "w.h5")])
    assert code == 130
    assert list(out_dir.iterdir()) == []


def test_a_signal_taken_by_another_thread_waits_for_the_end_of_a_deferred_block() -> None:
    """A SIGINT the kernel hands to a worker thread still runs Python's handler in the main thread.

    Masking it in the main thread alone did not defer it: the KeyboardInterrupt
    could come between ``mkstemp`` and the assignment that lets the cleanup
    find the temporary, which was left behind (seen in a loop of interrupted
    conversions, exit 130 with the ``.partial`` file still there).
    """
    import signal

    done: list[str] = []

    def kill_from_here() -> None:  # this thread does not block SIGINT: the kernel delivers it here
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        with output._signals_deferred():
            worker = threading.Thread(target=kill_from_here)
            worker.start()
            worker.join()
            for _ in range(1000):  # statements at which Python would run a pending handler
                time.sleep(0)
            done.append("block finished")
        done.append("after the block")  # never: the interrupt comes as the block ends
    assert done == ["block finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "the real handler is back"
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "the mask is restored"


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="no signal masks here")
def test_a_ctrl_c_raised_as_the_block_sets_the_mask_leaves_the_mask_as_it_was(monkeypatch: pytest.MonkeyPatch,
                                                                              ) -> None:
    """CPython runs the handlers of signals already received as ``pthread_sigmask`` returns, so a Ctrl-C can
    come out of the call that blocks the signals, after it blocked them. That KeyboardInterrupt must not leave
    them blocked in the main thread: a program that called caffeport would no longer see Ctrl-C at all."""
    import signal

    real = signal.pthread_sigmask
    raised: list[bool] = []

    def ctrl_c_as_it_blocks(how: int, mask: object) -> set[int]:
        previous = real(how, mask)
        if how == signal.SIG_BLOCK and signal.SIGINT in set(mask) and not raised:  # as CPython would, once
            raised.append(True)
            raise KeyboardInterrupt
        return previous

    before = real(signal.SIG_BLOCK, [])
    monkeypatch.setattr(signal, "pthread_sigmask", ctrl_c_as_it_blocks)
    with pytest.raises(KeyboardInterrupt), output._signals_deferred():
        pytest.fail("the block ran although the Ctrl-C came first")
    assert raised
    assert real(signal.SIG_BLOCK, []) == before, "the mask is as it was before the block"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(sys.platform != "linux", reason="sync_file_range is Linux's; elsewhere nothing is started")
def test_the_writeback_thread_blocks_ctrl_c(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    masks: list[set[int]] = []

    def recording(fd: int) -> bool:
        masks.append(set(signal.pthread_sigmask(signal.SIG_BLOCK, [])))
        return False  # one call is enough

    monkeypatch.setattr(output, "_start_writeback", recording)
    with open(tmp_path / "out.bin", "wb") as handle, writeback_while_writing(handle.fileno(), interval=0.001):
        deadline = 600  # polls, not seconds: a loaded machine may be slow to start the thread
        while not masks and deadline:
            time.sleep(0.01)
            deadline -= 1
    assert masks, "the writeback thread ran"
    assert {signal.SIGINT, signal.SIGTERM} <= masks[0]
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []), "the main thread's mask is untouched"


def _convert_lenet_with_writer(monkeypatch: pytest.MonkeyPatch, writer: object, output: Path) -> int:
    """``caffeport convert`` of LeNet to ``output`` through the CLI, with ``writer`` as the keras-h5 writer."""
    from caffeport import cli
    from caffeport.exporters import load_exporters
    from tests.conftest import models_dir

    exporters = load_exporters()
    monkeypatch.setitem(exporters, "keras-h5", dataclasses.replace(exporters["keras-h5"], write=writer))
    folder = models_dir() / "caffe-reference" / "a_lenet"
    return cli.main(["convert", str(folder / "a_lenet.caffemodel"), "-p", str(folder / "deploy.prototxt"),
                     "-o", str(output)])


def test_convert_cli_exits_130_for_any_caffeport_error_made_of_a_ctrl_c(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's backstop: a CaffeportError raised while a KeyboardInterrupt unwound is the interrupt, exit 130."""
    from caffeport.errors import OutputError

    def reporting_writer(net: object, path: Path, options: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OutputError("cannot flush it", path=path)  # noqa: B904

    assert _convert_lenet_with_writer(monkeypatch, reporting_writer, tmp_path / "w.h5") == 130
    assert list(tmp_path.iterdir()) == []


def test_convert_cli_exits_130_when_python_wraps_the_ctrl_c_in_another_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in a loop of Ctrl-C tests on -f onnx: an interrupt while a lazily imported module defines a
    dataclass reaches the CLI as ``RuntimeError: Error calling __set_name__`` caused by the KeyboardInterrupt; it
    is the interrupt: exit 130 and one line, not a traceback and exit 1."""

    def importing_writer(net: object, path: Path, options: object) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise RuntimeError("Error calling __set_name__ on 'Field' instance 'constants' in 'Context'") from exc

    assert _convert_lenet_with_writer(monkeypatch, importing_writer, tmp_path / "w.h5") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "caffeport: interrupted"
    assert list(tmp_path.iterdir()) == []

    def failing_writer(net: object, path: Path, options: object) -> None:
        raise RuntimeError("a bug, no interrupt")

    with pytest.raises(RuntimeError, match="a bug, no interrupt"):  # anything else is still a bug's traceback
        _convert_lenet_with_writer(monkeypatch, failing_writer, tmp_path / "w.h5")
