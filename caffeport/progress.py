"""Progress on long conversions: a one-line bar on stderr, only where someone is watching.

Shown when stderr is a terminal and the model is large enough for a wait to be
noticed; silent otherwise (pipes, CI logs, ``-q``), so scripts never have to
filter it out.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: models smaller than this finish before a bar would be useful
THRESHOLD_BYTES = 64 << 20


class ProgressBar:
    """Bytes and blobs done, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done_bytes: int, total_bytes: int, done_blobs: int, total_blobs: int) -> None:
        now = time.monotonic()
        if now - self.last_draw < 0.1 and done_bytes < total_bytes:
            return
        self.last_draw = now
        self.drawn = True
        fraction = min(1.0, done_bytes / max(1, total_bytes))
        width = 30
        bar = "#" * int(fraction * width)
        rate = done_bytes / max(now - self.started, 1e-9) / 1e6
        self.stream.write(f"\r[{bar:<{width}}] {fraction:4.0%} {done_bytes / 1e6:,.0f}/{total_bytes / 1e6:,.0f} "
                          f"MB, blob {done_blobs}/{total_blobs}, {rate:,.0f} MB/s")
        self.stream.flush()

    def close(self) -> None:
        if not self.drawn:
            return
        self.stream.write("\n")
        self.stream.flush()


def wanted(model_bytes: int, quiet: bool, stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return not quiet and model_bytes >= THRESHOLD_BYTES and stream.isatty()
