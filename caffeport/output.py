"""Writing output files safely: all or nothing, never over an input.

Every file caffeport writes goes through `atomic_output`: the writer fills a
temporary file in the destination directory (a hidden ``.NAME.*.partial*``
beside the target), which is renamed over the target only when writing
succeeded. Any error, Ctrl-C (``KeyboardInterrupt``) or, once
`exit_on_termination_signals` is installed, SIGTERM/SIGHUP removes it, so a
user never finds a half-written weights file that loads with wrong values.
Only a SIGKILL or a power cut can leave the hidden temporary behind; the
target path itself never holds a partial file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType

from caffeport.errors import OutputError

PathLike = str | os.PathLike[str]

#: the signals `exit_on_termination_signals` turns into ``SystemExit``
TERMINATION_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
_DEFERRED = {signal.SIGINT, *TERMINATION_SIGNALS}


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_termination_signals() -> None:
    """Make SIGTERM and SIGHUP raise ``SystemExit(128 + signal)`` so that cleanups run, as Ctrl-C does.

    Python's default for these signals kills the process on the spot, which
    would leave `atomic_output`'s temporary file behind. Call this once, from
    the main thread, at the start of a command-line program; handlers someone
    else installed are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in TERMINATION_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_exit)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and termination signals back for a few system calls that must not be split."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: through symlinks and hard links, or the same spelling if absent."""
    with contextlib.suppress(OSError, ValueError):
        if os.path.samefile(a, b):
            return True
    return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def check_output_path(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Refuse an output path that is an input, a directory, a special file or (without ``force``) a file."""
    target = Path(path)
    for source in inputs:
        if source is not None and _same_file(target, source):
            raise OutputError("refusing to write over an input file; choose another output path", path=target)
    if target.is_dir():
        raise OutputError("is a directory; give a file name for the output", path=target)
    if target.exists() and not force:
        raise OutputError("already exists; pass --force to overwrite it", path=target)
    if target.is_symlink() and not target.exists() and not force:
        raise OutputError("is a symbolic link to a missing file; pass --force to replace the link", path=target)
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        raise OutputError("is not a regular file (a device or a pipe?); refusing to replace it", path=target)
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"the output directory {str(parent)!r} does not exist", path=target)
    return target


@contextlib.contextmanager
def atomic_output(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps all of the target's suffixes (``.weights.h5``), so writers that add an
    extension when it is missing (``numpy.save``) do not rename it. It is
    removed on any exception, ``KeyboardInterrupt`` and ``SystemExit``
    included; signals are held back while it is being created and removed so
    that one arriving then cannot leave it behind. Without ``force`` the
    target is published with a hard link, which fails instead of replacing a
    file that appeared at the path while we were writing.
    """
    inputs = list(inputs)
    target = check_output_path(path, force=force, inputs=inputs)
    tmp: Path | None = None
    try:
        with _signals_deferred():
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{''.join(target.suffixes)}",
                                                dir=target.parent)
            except OSError as exc:
                raise OutputError(
                    f"cannot create a file in {str(target.parent)!r}: {exc.strerror}", path=target
                ) from None
            tmp = Path(tmp_name)
        try:
            with writeback_while_writing(fd):
                yield tmp
        finally:
            os.close(fd)
        _finish(tmp)
        _publish(tmp, target, force=force, inputs=inputs)
    except BaseException:
        with _signals_deferred():
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        raise


def _publish(tmp: Path, target: Path, *, force: bool, inputs: list[PathLike | None]) -> None:
    """Move the finished temporary file to ``target`` in one step."""
    for source in inputs:  # the same checks again: the path may have changed while we wrote
        if source is not None and _same_file(target, source):
            raise OutputError("refusing to write over an input file; choose another output path", path=target)
    if force:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise OutputError("appeared while the output was being written; pass --force to overwrite it",
                          path=target) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from None
        if os.path.lexists(target):  # no hard links on this file system: check, then rename
            raise OutputError("appeared while the output was being written; pass --force to overwrite it",
                              path=target) from None
        os.replace(tmp, target)
        return
    with _signals_deferred():
        tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _finish(tmp: Path) -> None:
    """Give the file the permissions a plain open() would (mkstemp makes it 0600) and flush it to disk.

    The fsync makes the rename publish a complete file even across a crash.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())


@contextlib.contextmanager
def writeback_while_writing(fd: int, interval: float = 0.1) -> Iterator[None]:
    """Have the kernel write ``fd``'s dirty pages to disk every ``interval`` seconds while the block runs.

    `atomic_output` fsyncs the finished file, and an fsync of hundreds of MB
    that all sit dirty in the page cache waits for every one of them (Linux
    starts on its own only past ``dirty_background_ratio``, gigabytes on a
    large machine). Started as the file is written, the disk works in
    parallel with the conversion and the closing fsync has only the tail
    left: 0.2 s of a 0.9 s VGG16 conversion, measured. It is Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, called from a thread of its
    own because it blocks while the disk's queue is full (3.6 s of a 2.6 GB
    conversion when called between writes); where it is missing this does
    nothing and the fsync does all the work.
    """
    if not _sync_file_range_available():
        yield
        return
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            if not _start_writeback(fd):
                return

    thread = threading.Thread(target=run, name="caffeport-writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: object = None


def _start_writeback(fd: int) -> bool:
    """Start writeback of all of ``fd``'s dirty pages (offset 0, length 0: to the end); False if refused."""
    return bool(_sync_file_range) and _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) == 0  # type: ignore[operator]


def _sync_file_range_available() -> bool:
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = _load_sync_file_range()
    return bool(_sync_file_range)


def _load_sync_file_range() -> object:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
