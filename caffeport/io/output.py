"""Writing output files safely: all or nothing, never over an input.

Every file caffeport writes goes through `atomic_output`: the writer fills a
temporary file in the destination directory (a hidden ``.NAME.*.partial*``
beside the target), which is renamed over the target only when writing
succeeded. Any error, Ctrl-C (``KeyboardInterrupt``) or, once
`exit_on_termination_signals` is installed, SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/
SIGUSR2 removes it, so a user never finds a half-written weights file that
loads with wrong values. Only a SIGKILL or a power cut can leave the hidden
temporary behind; the target path itself never holds a partial file.

A write that the system refuses (a full disk, ``ulimit -f``, a quota, an I/O
error, a directory put at the path meanwhile) is an `OutputError` naming the
path, not a traceback; `guarded_stdout` does the same for standard output
(``caffeport inspect M > /dev/full``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

from caffeport.errors import OutputError, option_error

PathLike = str | os.PathLike[str]

#: what a command's ``main`` returns after Ctrl-C: 128 + SIGINT, the status a shell reports for it (the entry
#: points in `caffeport.__main__` then end the process by SIGINT)
INTERRUPTED = 130

#: the signals `exit_on_termination_signals` turns into ``SystemExit``: every one whose default action ends the
#: process and that a user or a job scheduler sends to stop a program (Ctrl-\ is SIGQUIT; batch systems send
#: SIGUSR1/SIGUSR2 ahead of a time limit)
TERMINATION_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name)
)
_DEFERRED = {signal.SIGINT, *TERMINATION_SIGNALS}
#: errors of a write the system refused: reported as an `OutputError` naming the output, never a traceback
WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EIO", "EROFS") if hasattr(errno, name)
)
#: the longest file name when the file system does not say (Linux's NAME_MAX, in bytes)
DEFAULT_NAME_MAX = 255
#: what the temporary name adds to the kept part of the target's name: the leading dot, the '.' before
#: mkstemp's 8 random characters, and ``.partial``
_TEMP_OVERHEAD = len(".") + len(".") + 8 + len(".partial")
#: at most this many bytes of the target's trailing suffixes are repeated at the end of the temporary name
MAX_TEMP_SUFFIX_BYTES = 64


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_termination_signals() -> None:
    """Make the `TERMINATION_SIGNALS` raise ``SystemExit(128 + signal)`` so that cleanups run, as Ctrl-C does.

    Python's default for these signals kills the process on the spot, which
    would leave `atomic_output`'s temporary file behind. SIGXFSZ (a write past
    ``ulimit -f``) is ignored instead, so that the write fails with EFBIG and
    is reported like a full disk rather than killing the process with a core
    dump. Call this once, from the main thread, at the start of a command-line
    program; handlers someone else installed are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in TERMINATION_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_exit)
    if hasattr(signal, "SIGXFSZ") and signal.getsignal(signal.SIGXFSZ) is signal.SIG_DFL:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and termination signals back for a few statements that must not be split.

    Two layers, because blocking a signal in this thread does not stop it:
    the kernel hands a process-directed signal to any thread that does not
    block it (a worker another module started), and CPython then runs the
    Python handler in the main thread at its next statement, mask or not. So
    in the main thread the Python handlers are swapped for one that only
    notes the signal, and put back at the end, where the first noted signal
    is handed to its own handler (raising ``KeyboardInterrupt`` there, after
    the protected statements, not between ``mkstemp`` and the assignment
    that lets the cleanup find its file). The thread's mask is restored
    before that, so signals the kernel held back arrive then too.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # Python runs the handlers of signals already received when pthread_sigmask returns, so a Ctrl-C can raise
    # from it after the mask is set: the mask is read first (a raise there changes nothing), set inside the try
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    noted: list[int] = []
    handlers: dict[int, Any] = {}
    holding = [True]

    def note(signum: int, frame: FrameType | None) -> None:
        if holding[0]:
            noted.append(signum)
        else:  # the block is over but a signal ran before its handler was put back: it is the real one's
            handlers[signum](signum, frame)

    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
        if threading.current_thread() is threading.main_thread():
            for sig in _DEFERRED:
                handler = signal.getsignal(sig)
                if callable(handler):
                    handlers[sig] = handler
                    signal.signal(sig, note)
        yield
    finally:
        holding[0] = False
        try:  # a signal now goes through note to its real handler: one raising here still restores the mask
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for sig in noted:
            handlers[sig](sig, None)


def in_chain(exc: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]
             ) -> BaseException | None:
    """The first exception of ``kinds`` in ``exc``'s chain (``exc`` itself, then its ``__cause__`` and
    ``__context__``, breadth first), or None; a cycle or a very long chain ends the walk."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 100:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        if isinstance(current, kinds):
            return current
        seen.add(id(current))
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return None


def interruption(exc: BaseException) -> BaseException | None:
    """The Ctrl-C (``KeyboardInterrupt``) or signal exit (``SystemExit``) behind ``exc``, if one is in its chain.

    A library that is interrupted while it works can hide the interrupt: h5py
    closing a file that a ``KeyboardInterrupt`` left half-made raises an
    errno-less ``OSError`` (or a ValueError) whose ``__context__`` is the
    interrupt. Reported as a write error it would turn Ctrl-C into exit 1;
    callers re-raise what this returns instead, so the user still gets 130
    (or 128 + the signal). Both ``__cause__`` and ``__context__`` are
    followed (`in_chain`).
    """
    return in_chain(exc, (KeyboardInterrupt, SystemExit))


def block_deferred_signals() -> None:
    """Block Ctrl-C and the termination signals in the calling thread, for a worker thread's first statement.

    The kernel delivers a process-directed signal to any thread that does not
    block it. Python runs the handler in the main thread anyway, but a signal
    landing in a worker interrupts that worker's system call instead of the
    main thread's wait, so the main thread may not notice it until its wait
    ends; and an ``EINTR`` that a C library (HDF5, libc through ctypes) sees
    in a worker can surface as a failed write. With every worker blocking
    them, only the main thread can receive these signals, and while it holds
    them back itself (`atomic_output` creating or removing its temporary)
    they wait, pending, until it lets them in.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)


def start_worker(thread: threading.Thread) -> None:
    """``thread.start()`` with `block_deferred_signals` in force from the thread's first instruction.

    A new thread inherits its creator's signal mask, so starting it while the
    creator blocks the signals leaves no moment in which the worker could take
    one (blocking them in the thread's own code comes a moment too late).
    """
    with _signals_deferred():
        thread.start()


def _same_file(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name one file: through symlinks and hard links, or the same spelling if absent."""
    with contextlib.suppress(OSError, ValueError):
        if os.path.samefile(a, b):
            return True
    return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def check_output_path(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike | None] = (),
                      directory: bool = False) -> Path:
    """Refuse an output path that is an input, a directory, a special file or (without ``force``) a file.

    Also refused: a path ending in a separator (``out/``), which names a
    directory, not a file (`pathlib` would quietly drop the ``/`` and write a
    file called ``out``), and a file name longer than the file system allows.

    With ``directory`` the output is a folder a format fills (``-f torch-code``):
    a trailing separator is then what the user means, an existing directory or
    file is refused without ``force``, and with ``force`` only a directory
    holding none of the inputs may be replaced (replacing ``examples/`` must not
    delete the caffemodel in it).
    """
    spelled = os.fspath(path)
    target = Path(path)
    if len(os.fsencode(target.name)) > DEFAULT_NAME_MAX:  # before any stat(), which fails on it
        raise OutputError(f"the file name is {len(os.fsencode(target.name))} bytes long, more than file systems "
                          f"allow ({DEFAULT_NAME_MAX}); choose a shorter name", path=target)
    try:
        if directory:
            return _checked_output_directory(spelled, target, force=force, inputs=inputs)
        return _checked_output_path(spelled, target, force=force, inputs=inputs)
    except OSError as exc:  # the path cannot even be looked at: too long, a directory we may not search, ...
        raise OutputError(f"cannot use it as the output: {_reason(exc)}", path=spelled) from None


def _checked_output_path(spelled: str, target: Path, *, force: bool, inputs: Iterable[PathLike | None]) -> Path:
    for source in inputs:
        if source is not None and _same_file(target, source):
            raise OutputError("refusing to write over an input file; choose another output path", path=target)
    if target.is_dir():
        raise OutputError("is a directory, not a file; give the output's file name (a path inside it to write "
                          "there)", path=spelled)
    if spelled.endswith(tuple(sep for sep in (os.sep, os.altsep) if sep)):
        raise OutputError("ends with a path separator, so it names a directory, and there is no such directory; "
                          "give the output's file name", path=spelled)
    if target.exists() and not force:
        raise option_error(OutputError, "already exists; pass {force} to overwrite it", path=target)
    if target.is_symlink() and not target.exists() and not force:
        raise option_error(OutputError, "is a symbolic link to a missing file; pass {force} to replace the link",
                           path=target)
    if target.exists() and not stat.S_ISREG(target.stat().st_mode):
        raise OutputError("is not a regular file (a device or a pipe?); refusing to replace it", path=target)
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"the output directory {str(parent)!r} does not exist", path=target)
    name_max = _name_max(parent)
    if len(os.fsencode(target.name)) > name_max:
        raise OutputError(f"the file name is {len(os.fsencode(target.name))} bytes long, more than the file "
                          f"system allows ({name_max}); choose a shorter name", path=target)
    return target


def _inside(path: PathLike, directory: Path) -> bool:
    """Whether ``path`` (through symlinks) lies in ``directory`` or below it."""
    with contextlib.suppress(OSError, ValueError):
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(directory))
    return False


def _checked_output_directory(spelled: str, target: Path, *, force: bool,
                              inputs: Iterable[PathLike | None]) -> Path:
    """`check_output_path` for a format that writes a directory (see there)."""
    if not target.name or target.name in (".", ".."):
        raise OutputError("names no new directory; give the output folder's name (e.g. mymodel/)", path=spelled)
    for source in inputs:
        if source is None:
            continue
        if _same_file(target, source):
            raise OutputError("refusing to write over an input file; choose another output path", path=target)
        if target.is_dir() and _inside(source, target):
            raise OutputError(f"holds the input {os.fspath(source)!r}; refusing to replace it: choose another "
                              "output folder", path=spelled)
    if os.path.lexists(target) and not force:
        what = "directory" if target.is_dir() else "file"
        raise option_error(OutputError, f"already exists (a {what}); pass {{force}} to replace it", path=spelled)
    if target.is_symlink():
        raise OutputError("is a symbolic link; refusing to replace it with a folder", path=spelled)
    if os.path.lexists(target) and not (target.is_dir() or stat.S_ISREG(target.stat().st_mode)):
        raise OutputError("is not a regular file or directory (a device or a pipe?); refusing to replace it",
                          path=spelled)
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"the output directory {str(parent)!r} does not exist", path=target)
    name_max = _name_max(parent)
    if len(os.fsencode(target.name)) > name_max:
        raise OutputError(f"the name is {len(os.fsencode(target.name))} bytes long, more than the file "
                          f"system allows ({name_max}); choose a shorter name", path=target)
    return target


def _name_max(directory: Path) -> int:
    """The longest file name (in bytes) ``directory``'s file system takes."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def temporary_affixes(target: Path, name_max: int = DEFAULT_NAME_MAX) -> tuple[str, str]:
    """The (prefix, suffix) of `atomic_output`'s temporary name for ``target``: ``.NAME.`` and ``.partial.SUFFIXES``.

    The temporary name ends with the target's trailing suffixes (all of them,
    up to `MAX_TEMP_SUFFIX_BYTES`), because writers pick or check the format
    by the ending: Keras 3 only writes ``*.weights.h5`` and ``*.keras``,
    ``numpy.save`` adds ``.npy`` to a name without it. The target's name in the
    prefix is cut (at a character boundary) so the whole temporary name,
    mkstemp's 8 random characters included, fits in ``name_max`` bytes: a
    legal 250-byte output name must not fail for its temporary's sake.
    """
    suffixes = target.suffixes
    while suffixes and len(os.fsencode("".join(suffixes))) > MAX_TEMP_SUFFIX_BYTES:
        suffixes = suffixes[1:]  # keep the endings nearest the end: those are the ones writers look at
    suffix = "".join(suffixes)
    budget = name_max - _TEMP_OVERHEAD - len(os.fsencode(suffix))
    stem = target.name
    while stem and len(os.fsencode(stem)) > budget:
        stem = stem[:-1]
    return f".{stem}.", f".partial{suffix}"


@contextlib.contextmanager
def atomic_output(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike | None] = (),
                  directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    With ``directory`` the temporary is an empty directory the block fills (see
    `atomic_output_directory`).

    The temporary name keeps the target's suffixes (``.weights.h5``, see
    `temporary_affixes`), so writers that add an extension when it is missing
    (``numpy.save``) do not rename it. It is removed on any exception,
    ``KeyboardInterrupt`` and ``SystemExit`` included; signals are held back
    while it is being created and removed so that one arriving then cannot
    leave it behind. A write the system refuses (see `is_write_error`)
    becomes an `OutputError` naming the target. Without ``force`` the target is published with a hard link, which
    fails instead of replacing a file that appeared at the path while we were
    writing.
    """
    if directory:
        with atomic_output_directory(path, force=force, inputs=inputs) as tmp_dir:
            yield tmp_dir
        return
    inputs = list(inputs)
    target = check_output_path(path, force=force, inputs=inputs)
    tmp: Path | None = None
    try:
        with _signals_deferred():
            prefix, suffix = temporary_affixes(target, _name_max(target.parent))
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
            except OSError as exc:
                raise OutputError(
                    f"cannot create a file in {str(target.parent)!r}: {exc.strerror}", path=target
                ) from None
            tmp = Path(tmp_name)
        try:
            try:
                with writeback_while_writing(fd):
                    yield tmp
            finally:
                os.close(fd)
            _finish(tmp)
            _publish(tmp, target, force=force, inputs=inputs)
        except OSError as exc:
            interrupted = interruption(exc)
            if interrupted is not None:  # Ctrl-C inside a writer that reported it as a failed write
                raise interrupted from None
            if not is_write_error(exc, tmp, target):
                raise
            reason = _reason(exc) if exc.errno is not None else _diagnosed(tmp, exc)
            raise OutputError(f"cannot write it: {reason}; nothing was written there", path=target) from exc
    except BaseException:
        with _signals_deferred():
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_output_directory(path: PathLike, *, force: bool = False,
                            inputs: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; rename it to ``path`` if the block succeeds.

    For formats whose output is a folder of files (``-f torch-code``): the
    hidden ``.NAME.*.partial`` directory is filled, every file in it fsynced,
    and renamed into place in one step, so the target never holds half a
    model. Any exception, Ctrl-C or handled termination signal removes it with
    everything written so far. Without ``force`` the rename refuses a path that
    appeared meanwhile (``RENAME_NOREPLACE`` where Linux has it); with ``force``
    an existing target (a directory holding no input, or a file) is moved
    aside under a hidden name first and removed once the new one is in place.
    """
    inputs = list(inputs)
    target = check_output_path(path, force=force, inputs=inputs, directory=True)
    tmp: Path | None = None
    try:
        with _signals_deferred():
            prefix, suffix = temporary_affixes(target, _name_max(target.parent))
            try:
                tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
            except OSError as exc:
                raise OutputError(
                    f"cannot create a directory in {str(target.parent)!r}: {exc.strerror}", path=target
                ) from None
        try:
            yield tmp
            _finish_directory(tmp)
            _publish_directory(tmp, target, force=force, inputs=inputs)
        except OSError as exc:
            interrupted = interruption(exc)
            if interrupted is not None:  # see atomic_output
                raise interrupted from None
            if not is_write_error(exc, tmp, target, *(p for p in tmp.rglob("*"))):
                raise
            raise OutputError(f"cannot write it: {_reason(exc)}; nothing was written there", path=target) from exc
    except BaseException:
        with _signals_deferred():
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        raise


def _finish_directory(tmp: Path) -> None:
    """Give the directory and its files a plain mkdir's/open's permissions and flush them all to disk."""
    mask = _umask()
    for item in sorted(tmp.rglob("*")):
        if item.is_file() and not item.is_symlink():
            with open(item, "rb+") as handle:
                os.fsync(handle.fileno())
        elif item.is_dir():
            os.chmod(item, 0o777 & ~mask)
    os.chmod(tmp, 0o777 & ~mask)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _rename_noreplace(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``, failing with FileExistsError if ``target`` exists (atomically on Linux)."""
    renameat2 = _load_renameat2()
    if renameat2 is not None:
        import ctypes

        if renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # else: the file system cannot; fall back
            raise OSError(code, os.strerror(code), os.fspath(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(target))
    os.rename(source, target)


def _load_renameat2() -> Any:
    import ctypes

    return _libc_function("renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint])


def _libc_function(name: str, argtypes: list[Any]) -> Any:
    """Linux libc's ``name`` (returning a C int, errno kept), or None where there is no such function."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


def _publish_directory(tmp: Path, target: Path, *, force: bool, inputs: list[PathLike | None]) -> None:
    """Move the finished temporary directory to ``target`` (checks again: the path may have changed meanwhile)."""
    check_output_path(target, force=force, inputs=inputs, directory=True)
    aside: Path | None = None
    if force and os.path.lexists(target):
        with _signals_deferred():
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".replaced", dir=target.parent))
            os.replace(target, aside / "old")
    try:
        _rename_noreplace(tmp, target)
    except FileExistsError:
        if aside is not None:
            with contextlib.suppress(OSError):
                os.rename(aside / "old", target)
        raise option_error(OutputError, "appeared while the output was being written; pass {force} to replace it",
                           path=target) from None
    except BaseException:
        if aside is not None:  # put the old output back: a failed replace must leave it as it was
            with contextlib.suppress(OSError):
                os.rename(aside / "old", target)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def is_write_error(exc: OSError, *paths: PathLike) -> bool:
    """Whether ``exc`` is the system refusing a write to one of ``paths``, not a failure about another file.

    An error naming one of ``paths`` is one; an error naming no file is one
    when its errno is a write's (`WRITE_ERRNOS`: the disk is full, the file too
    large for ``ulimit -f``, ...), which is how ``write`` on a descriptor
    reports it, or when it has no errno at all (numpy's short ``tofile``, h5py's
    own failures: writers report those so). An error naming some other file
    (an import, a model file the writer opens) or with another errno is left
    alone.
    """
    ours = {os.fspath(p) for p in paths}
    named = [os.fspath(f) for f in (exc.filename, exc.filename2) if isinstance(f, (str, bytes, os.PathLike))]
    if named:
        return any(n in ours for n in named)
    return exc.errno in WRITE_ERRNOS or exc.errno is None


def _reason(exc: OSError) -> str:
    """The system's words for ``exc``, on one line."""
    text = os.strerror(exc.errno) if exc.errno is not None else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def _diagnosed(tmp: Path, exc: OSError) -> str:
    """Why a write failed that was reported without an errno (numpy's ``tofile``: "N requested and M written").

    Such a short write is the disk filling up or the file reaching ``ulimit -f``:
    say which when either is so, since "786432 requested and 262112 written"
    does not tell a user what to do.
    """
    with contextlib.suppress(OSError, ValueError):
        size = tmp.stat().st_size
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0] if resource is not None else -1
        if limit not in (-1, getattr(resource, "RLIM_INFINITY", -1)) and size >= limit:
            return f"{os.strerror(errno.EFBIG)} (the file size limit, ulimit -f, is {limit:,} bytes)"
        space = os.statvfs(tmp.parent)
        if space.f_bavail * space.f_frsize < max(size, 1) // 100 + space.f_frsize:
            return os.strerror(errno.ENOSPC)
    return _reason(exc)


def _publish(tmp: Path, target: Path, *, force: bool, inputs: list[PathLike | None]) -> None:
    """Move the finished temporary file to ``target`` in one step."""
    for source in inputs:  # the same checks again: the path may have changed while we wrote
        if source is not None and _same_file(target, source):
            raise OutputError("refusing to write over an input file; choose another output path", path=target)
    if force:
        try:
            os.replace(tmp, target)
        except IsADirectoryError:
            raise OutputError("became a directory while the output was being written; nothing was replaced",
                              path=target) from None
        return
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise option_error(OutputError, "appeared while the output was being written; pass {force} to overwrite it",
                           path=target) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise OutputError(f"cannot write: {exc.strerror or exc}", path=target) from None
        if os.path.lexists(target):  # no hard links on this file system: check, then rename
            raise option_error(OutputError, "appeared while the output was being written; pass {force} to "
                               "overwrite it", path=target) from None
        os.replace(tmp, target)
        return
    with _signals_deferred():
        tmp.unlink()


class _GuardedStream:
    """A text stream that reports a failed write as an `OutputError` (see `guarded_stdout`)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, text: str) -> int:
        with self._reported():
            return self._stream.write(text)

    def flush(self) -> None:
        with self._reported():
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    @contextlib.contextmanager
    def _reported(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            raise  # the reader went away (``| head``): not an error of ours, the caller decides
        except OSError as exc:
            _discard_unwritten(self._stream)
            raise OutputError(f"cannot write to {self._name}: {_reason(exc)}") from None


def _discard_unwritten(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null, so what is left in its buffer is not tried again at exit.

    Python flushes standard output once more as it exits; on a full device
    that fails again, prints "Exception ignored" and changes the exit status
    to 120.
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """Inside the block, a write to ``sys.stdout`` the system refuses is an `OutputError`; flushed at the end.

    ``caffeport inspect M > /dev/full`` must say "cannot write to standard
    output: No space left on device" on one line and exit 1, like any other
    output it cannot write, not show a traceback (or, when the text fits the
    buffer, an "Exception ignored" at exit). A ``BrokenPipeError`` passes
    through unchanged.
    """
    original = sys.stdout
    guarded = _GuardedStream(original, "standard output")
    sys.stdout = guarded  # type: ignore[assignment]
    try:
        yield
        guarded.flush()
    finally:
        if sys.stdout is guarded:
            sys.stdout = original


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
        block_deferred_signals()  # already inherited from start_worker; kept for a thread started otherwise
        while not stop.wait(interval):
            if not _start_writeback(fd):
                return

    thread = threading.Thread(target=run, name="caffeport-writeback", daemon=True)
    start_worker(thread)  # Ctrl-C must reach the main thread, not interrupt sync_file_range here
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
    import ctypes

    function = _libc_function("sync_file_range", [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint])
    return False if function is None else function  # False: looked for and absent (None: not looked for yet)
