"""Owner-only files and directories, whole-file atomic JSON writes, and tolerant reads and removals.

These are blocking calls; async callers run them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from kodestore.config import Durability
from kodestore.errors import StorageError
from kodestore.jsonutil import loads

DIR_MODE = 0o700
FILE_MODE = 0o600
_TMP_SUFFIX = ".tmp"


def storage_error(action: str, path: Path, exc: OSError) -> StorageError:
    """One-line error for a refused disk operation; raise it ``from exc``."""
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


def ensure_dir(path: Path) -> None:
    """Create ``path`` and its missing parents, each owner-only (``makedirs`` would not chmod parents)."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        ensure_dir(path.parent)
        with suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be partial, but almost never is)."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` survive power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, durability: Durability) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never a mix.

    The temp file is in the same directory (``os.replace`` is atomic only within a file system);
    with ``durability="fsync"`` the file and then the directory are fsynced.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
    try:
        ensure_dir(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            write_all(fd, data)
            if durability == "fsync":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durability == "fsync":
            fsync_dir(path.parent)
    except OSError as exc:
        with suppress(OSError):
            os.unlink(tmp)
        raise storage_error("write", path, exc) from exc


def read_json(path: Path) -> Any:
    """The decoded content of ``path``, or ``None`` when it does not exist."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise storage_error("read", path, exc) from exc
    try:
        return loads(data)
    except orjson.JSONDecodeError as exc:
        raise StorageError(f"cannot read {path}: not valid JSON ({exc})") from exc


def _temp_owner(name: str) -> str | None:
    """The file a leftover temp file of ``write_atomic`` belonged to, if ``name`` is one."""
    if not (name.startswith(".") and name.endswith(_TMP_SUFFIX)):
        return None
    return name[1 : -len(_TMP_SUFFIX)].rpartition(".")[0]


def remove_files(directory: Path, names: Iterable[str]) -> None:
    """Unlink the named files and temp files a crashed ``write_atomic`` left for them; absent is fine."""
    wanted = set(names)
    try:
        entries = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise storage_error("list", directory, exc) from exc
    for name in entries:
        if name in wanted or _temp_owner(name) in wanted:
            try:
                os.unlink(directory / name)
            except FileNotFoundError:
                pass  # removed concurrently
            except OSError as exc:
                raise storage_error("delete", directory / name, exc) from exc


def remove_dir_if_empty(directory: Path) -> None:
    """``rmdir`` unless another writer still has files there (or removed it first)."""
    try:
        os.rmdir(directory)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise storage_error("delete", directory, exc) from exc
