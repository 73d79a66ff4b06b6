"""Writing a file so that a crash leaves either the old content or the new, never a torn one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path, sync: bool = True) -> Iterator[BinaryIO]:
    """A handle on a temporary file beside `path`; on a clean exit it is fsynced and renamed over `path`
    (and the directory fsynced); on any error it is removed and `path` is left as it was. `sync=False` skips
    the fsyncs: a reader still never sees a torn file, but a crash may lose it (for caches a restart clears)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two processes writing one path never share a temporary
    try:
        with open(tmp, "wb") as out:
            yield out
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a refused checksum must not keep the half-written file
        tmp.unlink(missing_ok=True)
        raise
    if not sync:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomically(path: Path, data: bytes, sync: bool = True) -> None:
    """Write `data` to `path`: a temporary file, fsync, rename over, fsync the directory (no fsyncs if not
    `sync`)."""
    with atomic_file(path, sync) as out:
        out.write(data)
