"""Atomic file writes (a reader never sees a half-written file) and bounded reads."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Temp files of writers of `path` that were killed (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes via a temp file (named with our pid) and a rename; temp files left
    by killed writers of the same file are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; a shipped file gets the mode a plain open() would give.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def open_regular(path: str | os.PathLike, error: type[Exception], what: str) -> tuple[BinaryIO, int]:
    """(binary file, size) of a regular file, else `error` naming the file. Opened
    non-blocking and checked with fstat before any read, so a FIFO, a device (a symlink
    to /dev/zero) or a directory is refused instead of blocking or filling memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, TypeError, ValueError) as e:
        raise error(f"{path}: cannot read {what} ({getattr(e, 'strerror', None) or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise error(f"{path}: {kind}, expected {what}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike, limit: int, error: type[Exception], what: str) -> bytes:
    """The bytes of a regular file (see open_regular) of at most `limit` bytes, else `error`."""
    f, size = open_regular(path, error, what)
    with f:
        if size > limit:
            raise error(f"{path}: {size:,} bytes, more than the {limit:,} bytes {what} may have")
        try:
            data = f.read(size + 1)  # +1: a file that grew since fstat is caught, not read unbounded
        except OSError as e:
            raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > size:
        raise error(f"{path}: changed while being read")
    return data


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
