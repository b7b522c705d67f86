"""Writing output files safely: all or nothing, never over an input.

Every file caffeport writes goes through `atomic_output`: the writer fills a
temporary file in the destination directory, which is renamed over the target
only when writing succeeded. Any error or Ctrl-C removes it, so a user never
finds a half-written weights file that loads with wrong values.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from caffeport.errors import OutputError

PathLike = str | os.PathLike[str]


def check_output_path(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Refuse an output path that is an input, a directory, or (without ``force``) an existing file."""
    target = Path(path)
    for source in inputs:
        if source is None:
            continue
        with contextlib.suppress(OSError):
            if target.exists() and os.path.samefile(target, source):
                raise OutputError("refusing to write over an input file; choose another output path", path=target)
        if Path(os.path.abspath(source)) == Path(os.path.abspath(target)):
            raise OutputError("refusing to write over an input file; choose another output path", path=target)
    if target.is_dir():
        raise OutputError("is a directory; give a file name for the output", path=target)
    if target.exists() and not force:
        raise OutputError("already exists; pass --force to overwrite it", path=target)
    parent = target.parent
    if not parent.is_dir():
        raise OutputError(f"the output directory {str(parent)!r} does not exist", path=target)
    return target


@contextlib.contextmanager
def atomic_output(path: PathLike, *, force: bool = False, inputs: Iterable[PathLike | None] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps the target's suffix, so writers that add an
    extension when it is missing (``numpy.save``) do not rename it.
    """
    target = check_output_path(path, force=force, inputs=inputs)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{target.suffix}",
                                        dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot create a file in {str(target.parent)!r}: {exc.strerror}", path=target) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _finish(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
