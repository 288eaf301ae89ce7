"""One agent's event log: ``events.jsonl`` plus ``events.idx``, a sparse index that makes reads
"since a bookmark" cost the same however many events came before it.

The index holds fixed 16-byte records ``(offset: u64, prefix_max_seq: i64)``, little-endian: every line
before byte ``offset`` has ``bookmark.seq <= prefix_max_seq``. Any upper bound is correct, so seqs of
several writers may interleave. The index is only a hint: records past the end of the log, not at a
line start, or out of order are ignored, and losing the whole index loses no events.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
from bisect import bisect_right
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path

import orjson

from kodestore.backend import EventLogReport
from kodestore.config import Durability
from kodestore.files.applog import READ_CHUNK, Appended, AppendLog, warn_corrupt_line
from kodestore.files.atomic import FILE_MODE
from kodestore.jsonutil import dumps, loads
from kodestore.models import JSONDict

EVENTS_FILE = "events.jsonl"
INDEX_FILE = "events.idx"
FILES = (EVENTS_FILE, INDEX_FILE, "events.quarantine")
INDEX_INTERVAL = 64 * 1024  # bytes of log between index records: the most a since-read skims

_ENTRY = struct.Struct("<Qq")
NO_SEQ = -(2**63)
_MAX_SEQ = 2**63 - 1  # a stored prefix max of this means "this or more"

logger = logging.getLogger("kodestore")


def event_seq(event: object) -> int | None:
    """``bookmark.seq`` of a Timeline dict; ``None`` when it has none (a corrupt line)."""
    if isinstance(event, dict):
        bookmark = event.get("bookmark")
        if isinstance(bookmark, dict):
            seq = bookmark.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                return seq
    return None


def _parse(line: bytes) -> tuple[JSONDict, int] | None:
    try:
        event = loads(line)
    except orjson.JSONDecodeError:
        return None
    seq = event_seq(event)
    return None if seq is None else (event, seq)


def event_channel(event: JSONDict) -> object:
    """``event.channel`` of a Timeline dict, if it has one."""
    body = event.get("event")
    return body.get("channel") if isinstance(body, dict) else None


class EventLog:
    """Append Timeline dicts, read them since a seq, and check the whole file."""

    def __init__(self, directory: Path, durability: Durability = "os") -> None:
        self.log = AppendLog(directory / EVENTS_FILE, durability, agent_directory=directory)
        self.index_path = directory / INDEX_FILE
        # Our own appends since the last index record: [tracked_from, tracked_to) of file `inode`,
        # with no other writer in between, and the largest seq among them.
        self._inode = -1
        self._tracked_from = 0
        self._tracked_to = 0
        self._tracked_max = NO_SEQ
        self._indexed_to = 0  # offset of the last index record we know of

    @property
    def busy(self) -> bool:
        return self.log.busy

    def close(self) -> None:
        self.log.close()

    async def aclose(self) -> None:
        await self.log.aclose()

    async def append(self, *events: JSONDict) -> None:
        """Append Timeline dicts in one write; returns once written (or fsynced), then updates the index."""
        if not events:
            return
        lines = []
        top = NO_SEQ  # one plain loop: comprehensions and max() would cost more than the encoding
        for event in events:
            lines.append(dumps(event, "event"))
            seq = event_seq(event)
            if seq is not None and seq > top:
                top = seq
        done = await self.log.append(lines)
        self._track(done, top)
        if done.end - self._indexed_to >= INDEX_INTERVAL or done.start == 0:
            try:
                self._update_index(done)
            except OSError as exc:  # the event is written; a stale index only makes reads slower
                logger.warning("%s: not updated (%s)", self.index_path, exc.strerror or exc)

    def _track(self, done: Appended, seq: int) -> None:
        if done.inode != self._inode or done.start != self._tracked_to:
            # someone else wrote since our last append (or the file is new): restart from here
            self._inode = done.inode
            self._tracked_from = done.start
            self._tracked_max = NO_SEQ
            self._indexed_to = min(self._indexed_to, done.start)
        self._tracked_to = done.end
        if seq > self._tracked_max:
            self._tracked_max = seq

    def _update_index(self, done: Appended) -> None:
        """Add records up to ``done.end`` under the index's lock, reading back only what others wrote."""
        if done.start == 0:
            # a new log: whatever index exists belongs to a deleted one; never create one just to empty it
            with _locked(self.index_path, os.O_RDWR) as index:
                if index >= 0:
                    os.ftruncate(index, 0)
            return
        flags = os.O_RDWR | os.O_CREAT
        with _locked(self.index_path, flags) as index, _locked(self.log.path, os.O_RDONLY, False) as log:
            if index < 0 or log < 0:
                return
            size, last_offset, last_max = _index_tail(index, log)
            if done.end - last_offset < INDEX_INTERVAL:
                self._indexed_to = last_offset
                return
            # our tracked appends cover [tracked_from, end): read back only what lies before them
            scan_to = max(last_offset, self._tracked_from)
            records, running = _scan(log, last_offset, scan_to, last_max)
            records.append((done.end, min(max(running, self._tracked_max), _MAX_SEQ)))
            os.pwrite(index, b"".join(_ENTRY.pack(*record) for record in records), size)
        self._indexed_to = self._tracked_from = done.end
        self._tracked_max = NO_SEQ

    def _seek_offset(self, since_seq: int) -> int:
        """Start of the last indexed block whose preceding lines all have ``seq <= since_seq``."""
        try:
            raw = self.index_path.read_bytes()
            with _locked(self.log.path, os.O_RDONLY, False) as log:
                if log < 0:
                    return 0
                offsets, maxes = _valid_records(raw, os.fstat(log).st_size)
                i = bisect_right(maxes, min(since_seq, _MAX_SEQ - 1)) - 1
                while i >= 0 and os.pread(log, 1, offsets[i] - 1) != b"\n":
                    i -= 1
                return offsets[i] if i >= 0 else 0
        except OSError:  # no (readable) index: read from the start
            return 0

    async def read(self, since_seq: int | None, channel: str | None) -> AsyncGenerator[JSONDict, None]:
        """Timeline dicts in append order with ``seq > since_seq`` on ``channel``; skips corrupt lines.

        Closing this generator closes the file at once (not whenever the garbage collector gets to it)."""
        start = 0 if since_seq is None else await asyncio.to_thread(self._seek_offset, since_seq)
        async with aclosing(self.log.read_lines(start)) as lines:
            async for offset, line in lines:
                parsed = _parse(line)
                if parsed is None:
                    warn_corrupt_line(self.log.path, offset)
                    continue
                event, seq = parsed
                if since_seq is not None and seq <= since_seq:
                    continue
                if channel is not None and event_channel(event) != channel:
                    continue
                yield event

    async def inspect(self) -> EventLogReport:
        """Read every line: counts, the highest seq, corrupt lines, duplicate seqs, a torn tail."""
        report = EventLogReport()
        seen: set[int] = set()
        duplicates: set[int] = set()
        async for _, line in self.log.read_lines():
            report.lines += 1
            parsed = _parse(line)
            if parsed is None:
                report.corrupt_lines.append(report.lines)
                continue
            seq = parsed[1]
            if seq in seen:
                duplicates.add(seq)
            seen.add(seq)
            report.max_seq = seq if report.max_seq is None else max(report.max_seq, seq)
        report.duplicate_seqs = sorted(duplicates)
        report.torn_tail = await asyncio.to_thread(self.log.has_torn_tail)
        return report


@contextmanager
def _locked(path: Path, flags: int, lock: bool = True) -> Iterator[int]:
    """A descriptor for ``path`` (exclusively locked if ``lock``), or -1 when the file is absent."""
    try:
        fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    except FileNotFoundError:
        yield -1
        return
    try:
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _index_tail(index: int, log: int) -> tuple[int, int, int]:
    """(bytes of usable records, last record's offset, its prefix max), cutting unusable tail records.

    A torn record (a crash mid-write) or records past the log's end or not at a line start (the log
    lost its tail in a power cut) are cut so new records never build on them.
    """
    log_size = os.fstat(log).st_size
    size = os.fstat(index).st_size
    end = size - size % _ENTRY.size
    offset, prefix_max = 0, NO_SEQ
    while end:
        offset, prefix_max = _ENTRY.unpack(os.pread(index, _ENTRY.size, end - _ENTRY.size))
        if 0 < offset <= log_size and os.pread(log, 1, offset - 1) == b"\n":
            break
        end -= _ENTRY.size
        offset, prefix_max = 0, NO_SEQ
    if end != size:
        os.ftruncate(index, end)
    return end, offset, prefix_max


def _scan(log: int, begin: int, end: int, running: int) -> tuple[list[tuple[int, int]], int]:
    """Index records for lines in ``[begin, end)`` (both line starts), one per ``INDEX_INTERVAL``.

    Returns the records and the running prefix max at ``end``; reads fixed chunks.
    """
    records: list[tuple[int, int]] = []
    last = pos = begin  # pos: file offset of data[0]
    data = b""
    while pos + len(data) < end:
        chunk = os.pread(log, min(READ_CHUNK, end - pos - len(data)), pos + len(data))
        if not chunk:
            break
        data += chunk
        start = 0
        while (newline := data.find(b"\n", start)) != -1:
            parsed = _parse(data[start:newline])
            if parsed is not None:
                running = max(running, parsed[1])
            line_end = pos + newline + 1
            if line_end - last >= INDEX_INTERVAL and line_end < end:
                records.append((line_end, min(running, _MAX_SEQ)))
                last = line_end
            start = newline + 1
        pos += start
        data = data[start:]
    return records, running


def _valid_records(raw: bytes, log_size: int) -> tuple[list[int], list[int]]:
    """Offsets and prefix maxes of the leading records that increase and lie within the log."""
    offsets: list[int] = []
    maxes: list[int] = []
    for offset, prefix_max in _ENTRY.iter_unpack(raw[: len(raw) - len(raw) % _ENTRY.size]):
        if offset > log_size or (offsets and (offset <= offsets[-1] or prefix_max < maxes[-1])):
            break
        if offset > 0:
            offsets.append(offset)
            maxes.append(prefix_max)
    return offsets, maxes
