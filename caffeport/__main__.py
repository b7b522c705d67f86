"""``python -m caffeport`` and the ``caffeport`` console script: the CLI, with Ctrl-C caught during start-up too.

`caffeport.cli` imports numpy, h5py and every command's module when it is
imported, which takes a noticeable moment; a Ctrl-C then would end in a
KeyboardInterrupt traceback, before `caffeport.cli.main` has a ``try`` to catch
it. `main` here imports nothing heavy itself and catches it around that import,
so an interrupt at any moment is the CLI's one line and exit 130. The console
script points here (``caffeport = "caffeport.__main__:main"``) for the same
reason.
"""

from __future__ import annotations

import sys

#: the exit status of a program ended by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130


def main() -> int:
    try:
        from caffeport.cli import main as cli_main
    except KeyboardInterrupt:
        print("caffeport: interrupted", file=sys.stderr)
        return INTERRUPTED
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
