"""Atomic file writes (a reader never sees a half-written file), bounded reads, and
the one JSON reader: every JSON file or JSON text nasrt accepts goes through
read_json / parse_json, which raise the caller's error type as "SOURCE: FIELD: what"."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

MAX_JSON_BYTES = 64 << 20  # a JSON file nasrt reads (plan, space, latency table): the model header's limit
MAX_JSON_DEPTH = 64        # nesting: the native loader's limit (csrc/runtime/model.h, Limits::json_depth)


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


def parse_json(text: Any, source: str, error: type[Exception], field: str = "") -> Any:
    """json.loads with one clear error for every way hostile text can fail (syntax,
    an integer beyond float range, nesting deeper than MAX_JSON_DEPTH, not text at all; NaN
    and Infinity pass, for each reader's finite-number check to name the field):
    `error("SOURCE: FIELD: what")`, or "SOURCE: what" without a field."""
    where = f"{source}: {field}: " if field else f"{source}: "
    if not isinstance(text, str):
        raise error(f"{where}must be JSON text, got {type(text).__name__}")
    try:
        doc = json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as e:
        raise error(f"{where}not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:  # deeper than the interpreter's stack: far past the limit
        raise error(f"{where}JSON nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError as e:  # e.g. integer string too long to convert
        raise error(f"{where}not valid JSON ({e})") from None
    if not _depth_within(doc, MAX_JSON_DEPTH):
        raise error(f"{where}JSON nested deeper than {MAX_JSON_DEPTH}")
    return doc


def _bounded_int(digits: str) -> int:
    # Beyond float range an integer makes float() raise OverflowError (not a ValueError) in
    # every reader that checks a number: refuse it here, as the native loader does.
    if len(digits.lstrip("-")) > 308:
        raise ValueError(f"an integer of {len(digits)} digits")
    return int(digits)


def _depth_within(doc: Any, limit: int) -> bool:
    """Whether no array or object lies more than `limit` levels deep (the outermost is level 1),
    as the native loader counts; iterative, so a deep document cannot exhaust the stack."""
    stack = [(doc, 1)] if isinstance(doc, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def read_json(path: str | os.PathLike, error: type[Exception], what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in `path`: a regular file (see open_regular) of at most `limit` bytes
    of UTF-8 text, parsed by parse_json; else `error` naming the file (and what was wrong)."""
    try:
        text = read_regular(path, limit, error, what).decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file, expected {what}") from None
    return parse_json(text, str(path), error)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
