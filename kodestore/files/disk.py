"""``RuntimeFiles`` on disk: per agent an event log, history logs and atomic JSON files.

Layout under ``<base_dir>/<agent_id>/``: ``events.jsonl`` (+ ``events.idx``, ``events.quarantine``),
``todos.json``, ``media-cache.json`` and ``history/<kind>.jsonl``. Directories are 0o700, files 0o600.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from contextlib import suppress
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, get_args

from kodestore.backend import EventLogReport, HistoryKind, RuntimeFiles
from kodestore.config import Durability
from kodestore.files import agent_dir, agent_dirs, create_base_dir, tombstone
from kodestore.files.applog import MAX_OPEN_LOGS, QUARANTINE_SUFFIX, AppendLog, LogCache, warn_corrupt_line
from kodestore.files.atomic import (
    FILE_MODE,
    ensure_dir,
    read_json,
    remove_dir_if_empty,
    remove_files,
    write_all,
    write_atomic,
)
from kodestore.files.eventlog import FILES as EVENT_FILES
from kodestore.files.eventlog import EventLog
from kodestore.jsonutil import dumps, loads
from kodestore.models import JSONDict

TODOS_FILE = "todos.json"
MEDIA_CACHE_FILE = "media-cache.json"
HISTORY_DIR = "history"
HISTORY_KINDS: tuple[HistoryKind, ...] = get_args(HistoryKind)
_HISTORY_FILES = [f"{kind}{suffix}" for kind in HISTORY_KINDS for suffix in (".jsonl", QUARANTINE_SUFFIX)]
_OPEN_HISTORY_LOGS = 32  # history is appended rarely; event logs get the larger share of descriptors
_CACHED_AGENT_DIRS = 4 * MAX_OPEN_LOGS  # a multiple of the open logs: their paths are rarely rebuilt


class DiskFiles(RuntimeFiles):
    """Runtime files under ``base_dir``; ``durability="fsync"`` makes every write survive power loss."""

    def __init__(self, base_dir: str | os.PathLike[str], durability: Durability = "os") -> None:
        self.base_dir = Path(base_dir)
        self.durability: Durability = durability
        # every call starts from an agent id; building its Path (pathlib, validation) costs more than a write
        self._agent_dirs = lru_cache(maxsize=_CACHED_AGENT_DIRS)(partial(agent_dir, self.base_dir))
        self._revived: set[str] = set()  # agents whose tombstone this process removed (or found none)
        self._events = LogCache(lambda directory: EventLog(directory, durability))
        self._history = LogCache(
            lambda path: AppendLog(path, durability, agent_directory=path.parent.parent), _OPEN_HISTORY_LOGS
        )

    def __repr__(self) -> str:
        return f"DiskFiles({str(self.base_dir)!r}, durability={self.durability!r})"

    def agent_dir(self, agent_id: str) -> Path:
        return self._agent_dirs(agent_id)

    def _history_path(self, agent_id: str, kind: HistoryKind) -> Path:
        return self.agent_dir(agent_id) / HISTORY_DIR / f"{kind}.jsonl"

    async def open(self) -> None:
        create_base_dir(self.base_dir)

    async def close(self) -> None:
        """Close every log after its queued appends are written."""
        await self._events.close()
        await self._history.close()

    # ---- events ----------------------------------------------------------------------------------

    async def append_events(self, agent_id: str, *events: JSONDict) -> None:
        await self._events.get(self.agent_dir(agent_id)).append(*events)

    def read_events(
        self, agent_id: str, since_seq: int | None, channel: str | None
    ) -> AsyncGenerator[JSONDict, None]:
        return self._events.get(self.agent_dir(agent_id)).read(since_seq, channel)

    async def inspect_events(self, agent_id: str) -> EventLogReport:
        return await self._events.get(self.agent_dir(agent_id)).inspect()

    # ---- whole-file values -----------------------------------------------------------------------

    async def _save(self, agent_id: str, name: str, value: Any, what: str) -> None:
        data = dumps(value, what)
        await asyncio.to_thread(self._write_value, self.agent_dir(agent_id), name, data)

    def _write_value(self, directory: Path, name: str, data: bytes) -> None:
        tombstone.refuse_if_deleted(directory)
        write_atomic(directory / name, data, self.durability)

    async def _load(self, agent_id: str, name: str) -> Any:
        return await asyncio.to_thread(read_json, self.agent_dir(agent_id) / name)

    async def save_todos(self, agent_id: str, todos: JSONDict) -> None:
        await self._save(agent_id, TODOS_FILE, todos, "todos")

    async def load_todos(self, agent_id: str) -> JSONDict | None:
        todos: JSONDict | None = await self._load(agent_id, TODOS_FILE)
        return todos

    async def save_media_cache(self, agent_id: str, records: list[JSONDict]) -> None:
        await self._save(agent_id, MEDIA_CACHE_FILE, records, "mediaCache")

    async def load_media_cache(self, agent_id: str) -> list[JSONDict]:
        records: list[JSONDict] | None = await self._load(agent_id, MEDIA_CACHE_FILE)
        return records or []

    # ---- history ---------------------------------------------------------------------------------

    async def append_history(self, agent_id: str, kind: HistoryKind, record: JSONDict) -> None:
        line = dumps(record, f"history.{kind}")
        await self._history.get(self._history_path(agent_id, kind)).append([line])

    async def load_history(self, agent_id: str, kind: HistoryKind) -> list[JSONDict]:
        log = self._history.get(self._history_path(agent_id, kind))
        records: list[JSONDict] = []
        async for offset, line in log.read_lines():
            try:
                record = loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                warn_corrupt_line(log.path, offset)
        return records

    # ---- the agent and the store -----------------------------------------------------------------

    async def delete_agent(self, agent_id: str, deleted_at_ms: int) -> None:
        """Remove this half's files and leave the tombstone (the directory holds only that after)."""
        directory = self.agent_dir(agent_id)
        self._revived.discard(agent_id)
        await self._events.discard(directory)
        for kind in HISTORY_KINDS:
            await self._history.discard(self._history_path(agent_id, kind))
        await asyncio.to_thread(self._delete_files, directory, deleted_at_ms)

    def _delete_files(self, directory: Path, deleted_at_ms: int) -> None:
        # the tombstone first: an append racing with the delete is refused rather than left behind
        tombstone.bury(directory, deleted_at_ms, self.durability)
        remove_files(directory / HISTORY_DIR, _HISTORY_FILES)
        remove_dir_if_empty(directory / HISTORY_DIR)
        remove_files(directory, (*EVENT_FILES, TODOS_FILE, MEDIA_CACHE_FILE))

    async def revive(self, agent_id: str, recreated: bool = True) -> None:
        if not recreated and agent_id in self._revived:
            return  # an info update, after one revive in this process: no unlink per turn
        # inline: one unlink of a file that is almost never there, cheaper than a hop to a thread
        tombstone.revive(self.agent_dir(agent_id))
        if len(self._revived) >= _CACHED_AGENT_DIRS:
            self._revived.clear()  # forgetting only costs an unlink on the agent's next save
        self._revived.add(agent_id)

    async def agent_ids(self) -> list[str]:
        return await asyncio.to_thread(_agents_with_files, self.base_dir)

    async def size_bytes(self) -> int:
        return await asyncio.to_thread(_total_size, self.base_dir)

    async def check_writable(self) -> str | None:
        return await asyncio.to_thread(_probe, self.base_dir)


def _has_file(directory: str) -> bool:
    """Any file but a tombstone: a deleted agent's directory is not an agent's."""
    return any(
        name != tombstone.TOMBSTONE_FILE or root != directory
        for root, _, files in os.walk(directory)
        for name in files
    )


def _agents_with_files(base_dir: Path) -> list[str]:
    # every subdirectory is an agent's: ".hidden" is a valid agent id, so no name is skipped
    return sorted(entry.name for entry in agent_dirs(base_dir) if _has_file(entry.path))


def _total_size(base_dir: Path) -> int:
    total = 0
    for root, _, files in os.walk(base_dir):
        for name in files:
            with suppress(FileNotFoundError):  # deleted while we walked
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _probe(base_dir: Path) -> str | None:
    probe = base_dir / f".kodestore-probe-{os.getpid()}"
    try:
        ensure_dir(base_dir)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            write_all(fd, b"probe")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        return f"{base_dir} is not writable: {exc.strerror or exc}"
    return None
