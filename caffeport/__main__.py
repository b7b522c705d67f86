"""The commands' entry points: ``python -m caffeport``, the ``caffeport`` and ``caffe-weight-converter`` scripts.

Ctrl-C during start-up. `caffeport.cli` imports numpy, h5py and every
command's module when it is imported, which takes a noticeable moment; a
Ctrl-C then would end in a KeyboardInterrupt traceback, before the command's
``main`` has a ``try`` to catch it. The entry points here import nothing heavy
themselves and catch it around that import, so an interrupt at any moment is
the command's one line. Both console scripts point here for the same reason.

Ctrl-C's end. Once the command has cleaned up and printed its line (its
``main`` returns `caffeport.io.output.INTERRUPTED`), the process ends by SIGINT's default action
rather than with exit status 130. A shell shows ``$?`` 130 either way, but
only a death by SIGINT tells a shell script that runs caffeport in a loop
that the user meant to stop the script: bash waits for the foreground command
and acts on the SIGINT it got too only if the command died of it; a command
that exits 130 handled it, and the loop goes on with the next model. It is
also how Python ends on an uncaught KeyboardInterrupt. Before, ``python -m
caffeport`` did so by accident, about once in 25 interrupted runs: CPython
marks a KeyboardInterrupt that leaves any ``exec`` or ``eval`` of a string
(a dataclass or namedtuple being defined by a lazily imported module) as
unhandled, and under ``-m`` killed the process by SIGINT at exit although the
CLI had caught it. The library's own ``caffeport.cli.main`` and
``caffeport.compat.main`` still return 130: ending the process is the entry
point's business, not theirs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

from caffeport.io.output import INTERRUPTED  # standard library and caffeport.errors only: a few milliseconds


def main() -> int:
    """``caffeport``: `caffeport.cli.main`, ended like a Ctrl-C'd program when interrupted."""
    return _run(_cli, "caffeport")


def weight_converter() -> int:
    """``caffe-weight-converter``: `caffeport.compat.main`, ended like a Ctrl-C'd program when interrupted."""
    return _run(_compat, "caffe-weight-converter")


def _cli() -> Callable[[], int]:
    from caffeport.cli import main as command

    return command


def _compat() -> Callable[[], int]:
    from caffeport.compat import main as command

    return command


def _run(load: Callable[[], Callable[[], int]], prog: str) -> int:
    """Run the command ``load`` imports; its `INTERRUPTED`, or a Ctrl-C while it loads (which it cannot catch),
    ends the process by SIGINT."""
    try:
        code = load()()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = INTERRUPTED
    if code == INTERRUPTED:
        _end_by_sigint()
    return code


def _end_by_sigint() -> None:
    """End this process by SIGINT's default action, as a program should once it has cleaned up after Ctrl-C.

    The signal is unblocked (a Ctrl-C can leave it blocked in this thread) and
    raised in this thread, so it is delivered before ``raise_signal`` returns.
    Where that is not how signals work (Windows) this returns, and the caller
    exits with `INTERRUPTED`.
    """
    if os.name != "posix":
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream must not stop the ending
            stream.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.raise_signal(signal.SIGINT)


if __name__ == "__main__":
    raise SystemExit(main())
