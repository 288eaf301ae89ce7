"""The JSONL append primitive shared by the event log and the history logs: safe across processes.

Every append takes an exclusive ``flock`` on the log, moves a torn tail left by a crash aside, and
writes all its lines with one ``os.write`` on an ``O_APPEND`` descriptor, so lines of concurrent
writers never interleave, tear or glue onto a half-written line.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Generic, NamedTuple, Protocol, TypeVar

import aiofiles

from kodestore.config import Durability
from kodestore.files.atomic import FILE_MODE, ensure_dir, storage_error, write_all
from kodestore.files.tombstone import refuse_if_deleted

READ_CHUNK = 256 * 1024
QUARANTINE_SUFFIX = ".quarantine"
MAX_OPEN_LOGS = 256

logger = logging.getLogger("kodestore")

T = TypeVar("T")


async def _in_full(job: Awaitable[T], undo: Callable[[T], Awaitable[object]] | None = None) -> T:
    """Await ``job`` to its end even if the caller is cancelled meanwhile, then re-raise the cancellation.

    aiofiles runs each file operation in a thread, which a cancellation does not stop: a plain
    ``await`` would drop the file an open goes on to return, or cancel a close still queued for a
    thread, leaving the garbage collector to close the file (with a ``ResourceWarning``). A cancelled
    caller here waits the few microseconds the thread needs and ``undo``es what it returned."""
    task = asyncio.ensure_future(job)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with suppress(OSError):
            result = await task
            if undo is not None:
                await undo(result)
        raise


class Appended(NamedTuple):
    """Where one append landed: bytes ``[start, end)`` of the file with inode ``inode``.

    A named tuple: built on every append, it costs half of a frozen dataclass."""

    start: int
    end: int
    inode: int


class AppendLog:
    """One JSONL file: appends (durable to the OS or fsynced), streaming reads, torn-tail repair."""

    def __init__(
        self, path: Path, durability: Durability = "os", agent_directory: Path | None = None
    ) -> None:
        self.path = path
        self.agent_directory = agent_directory  # whose tombstone forbids (re)creating this log
        self.quarantine_path = path.with_suffix(QUARANTINE_SUFFIX)
        self.durability = durability
        self.bytes_read = 0  # by read_lines, cumulative: shows how much a seek let a read skip
        self._fd: int | None = None
        self._our_end: tuple[int, int] | None = None  # (inode, size) right after our last write
        self._queue: list[tuple[bytes, asyncio.Future[Appended]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """A batch is being written in a thread; the descriptor must stay open."""
        return self._flusher is not None

    async def append(self, lines: Sequence[bytes]) -> Appended:
        """Append ``lines`` (without newlines) as one unit; returns once written to the OS or fsynced.

        With ``durability="os"`` the write runs right here on the event-loop thread: it is one small
        write into the page cache, cheaper than a hop to a thread, and a killed process loses nothing
        it was told is written. With ``"fsync"`` appends that arrive while a batch is being fsynced
        are queued and written together with one fsync (group commit), in a thread. An append whose
        caller is cancelled may still be written.
        """
        data = b"\n".join([*lines, b""])
        # one newline per line, counted in C: no line holds a newline of its own
        if data.count(b"\n") != len(lines):
            raise ValueError(f"{self.path}: a log line must not contain a newline")
        if self.durability == "os":
            return self._write(data)
        future: asyncio.Future[Appended] = asyncio.get_running_loop().create_future()
        self._queue.append((data, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_batches())
        return await future

    async def _flush_batches(self) -> None:
        batch: list[tuple[bytes, asyncio.Future[Appended]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    done = await asyncio.to_thread(self._write, b"".join(data for data, _ in batch))
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = done.start
                for data, future in batch:
                    if not future.done():
                        future.set_result(Appended(start, start + len(data), done.inode))
                    start += len(data)
                batch = []
        finally:
            self._flusher = None
            for _, future in batch + self._queue:
                future.cancel()
            self._queue = []

    def _write(self, data: bytes) -> Appended:
        """Under the log's exclusive lock: repair a torn tail, write ``data``, fsync if asked."""
        try:
            fd, stat = self._lock()
        except OSError as exc:
            raise storage_error("open", self.path, exc) from exc
        try:
            # the tail is whole when we wrote it last: skip reading it back
            size = stat.st_size
            if self._our_end != (stat.st_ino, size):
                size = self._cut_torn_tail(fd, size)
            try:
                write_all(fd, data)
                if self.durability == "fsync":
                    os.fsync(fd)
            except OSError:
                with suppress(OSError):
                    os.ftruncate(fd, size)  # leave the log as it was: no partial line
                raise
            self._our_end = (stat.st_ino, size + len(data))
            return Appended(size, size + len(data), stat.st_ino)
        except OSError as exc:
            raise storage_error("append to", self.path, exc) from exc
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock(self) -> tuple[int, os.stat_result]:
        """The log's descriptor, exclusively locked; reopened (a fresh file) if it was deleted."""
        while True:
            if self._fd is None:
                if self.agent_directory is not None:
                    refuse_if_deleted(self.agent_directory)
                ensure_dir(self.path.parent)
                flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                self._fd = os.open(self.path, flags, FILE_MODE)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                stat = os.fstat(self._fd)
            except OSError:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                raise
            if stat.st_nlink:
                return self._fd, stat
            self.close()  # closing drops the lock too

    def _cut_torn_tail(self, fd: int, size: int) -> int:
        """Move bytes after the last newline (a crashed writer's half line) to the quarantine file."""
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return size
        keep = _last_line_end(fd, size)
        tail = os.pread(fd, size - keep, keep)
        quarantine = os.open(
            self.quarantine_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE
        )
        try:
            write_all(quarantine, tail + b"\n")
            if self.durability == "fsync":
                os.fsync(quarantine)
        finally:
            os.close(quarantine)
        os.ftruncate(fd, keep)
        logger.warning(
            "%s: moved a torn line of %d bytes at offset %d to %s",
            self.path,
            len(tail),
            keep,
            self.quarantine_path.name,
        )
        return keep

    async def read_lines(self, start_offset: int = 0) -> AsyncGenerator[tuple[int, bytes], None]:
        """``(offset, line)`` for every complete line from ``start_offset``, without the newline.

        Reads in fixed chunks, so memory does not grow with the file; an unfinished last line (a
        writer mid-append, or a torn tail) is not yielded. A missing file has no lines. Each file
        operation is a hop to a thread (100-300 us on a busy machine, more than reading a chunk from
        the page cache): the file opens already at ``start_offset``, and a short chunk is the end of
        the file, so a read of the log's tail is three hops (open, read, close).
        """

        def open_at_start(path: str, flags: int) -> int:
            fd = os.open(path, flags | os.O_CLOEXEC)
            try:
                os.lseek(fd, start_offset, os.SEEK_SET)
            except OSError:
                os.close(fd)
                raise
            return fd

        try:
            file = await _in_full(
                aiofiles.open(self.path, "rb", opener=open_at_start), undo=lambda opened: opened.close()
            )
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise storage_error("read", self.path, exc) from exc
        try:
            offset = start_offset
            pending: list[bytes] = []
            while True:
                chunk = await file.read(READ_CHUNK)
                self.bytes_read += len(chunk)
                begin = 0
                newline = chunk.find(b"\n")
                while newline != -1:
                    line = chunk[begin:newline]
                    if pending:
                        pending.append(line)
                        line = b"".join(pending)
                        pending.clear()
                    yield offset, line
                    offset += len(line) + 1
                    begin = newline + 1
                    newline = chunk.find(b"\n", begin)
                if begin < len(chunk):
                    pending.append(chunk[begin:])
                if len(chunk) < READ_CHUNK:
                    break  # a buffered read of a regular file comes back short only at its end
        finally:
            await _in_full(file.close())

    def has_torn_tail(self) -> bool:
        """The file is non-empty and does not end with a newline (blocking; call in a thread)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return False
        try:
            size = os.fstat(fd).st_size
            return size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the descriptor; the next append reopens it. Only when not ``busy``."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    async def aclose(self) -> None:
        """Wait for queued appends to be written, then close."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        self.close()


def _last_line_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size``, or 0."""
    end = size
    while end > 0:
        begin = max(0, end - READ_CHUNK)
        newline = os.pread(fd, end - begin, begin).rfind(b"\n")
        if newline != -1:
            return begin + newline + 1
        end = begin
    return 0


def warn_corrupt_line(path: Path, offset: int) -> None:
    """Readers skip a line they cannot decode, and say so, but never stop at it."""
    logger.warning("%s: skipped a corrupt line at byte %d", path, offset)


class Pooled(Protocol):
    @property
    def busy(self) -> bool: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


P = TypeVar("P", bound=Pooled)


class LogCache(Generic[P]):
    """Logs by path with their descriptors open, least recently used first.

    Beyond ``max_open`` the oldest idle log is closed and dropped, so a process writing to many
    agents keeps a bounded number of descriptors; a busy log (a batch in flight) is never closed.
    """

    def __init__(self, factory: Callable[[Path], P], max_open: int = MAX_OPEN_LOGS) -> None:
        self._factory = factory
        self._max_open = max_open
        self._logs: OrderedDict[Path, P] = OrderedDict()

    def get(self, path: Path) -> P:
        log = self._logs.get(path)
        if log is not None:
            self._logs.move_to_end(path)
            return log
        log = self._logs[path] = self._factory(path)
        if len(self._logs) > self._max_open:
            self._evict(keep=path)
        return log

    def _evict(self, keep: Path) -> None:
        # walk from the oldest and stop at enough idle logs: usually the first one
        excess = len(self._logs) - self._max_open
        idle: list[Path] = []
        for path, log in self._logs.items():
            if len(idle) == excess:
                break
            if path != keep and not log.busy:
                idle.append(path)
        for path in idle:
            self._logs.pop(path).close()

    async def discard(self, path: Path) -> None:
        """Forget ``path`` after its pending appends are written (before deleting the file)."""
        log = self._logs.pop(path, None)
        if log is not None:
            await log.aclose()

    async def close(self) -> None:
        while self._logs:
            _, log = self._logs.popitem(last=False)
            await log.aclose()
