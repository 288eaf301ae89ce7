"""``backup``: a portable, verifiable copy of a store, taken while its writers keep running.

A backup is a directory of JSON lines that any backend can restore, so a Postgres backup restores
into SQLite and back:

- ``agents.jsonl``: one line per agent, everything but its events (see ``AgentState.to_json``; its
  ``sideRows`` hold its suspended states, feedback and LangGraph checkpoints), plus ``eventCount``,
  the number of its lines in ``events.jsonl``;
- ``events.jsonl``: ``{"agentId", "timeline"}`` lines, grouped by agent in the order of ``agents.jsonl``;
- ``manifest.json``: format version, times, source kind, totals (``sideRows`` apart from ``counts``)
  and the size and sha256 of each file.

On SQL stores the database half (info, messages, tool calls, snapshots, with each message's
first-save time and the agent's last update, and its side rows) of each batch of agents is one snapshot (see
``for_each_agent``); each agent's event log is read after its batch and cut there, so the log always
reaches the info's bookmark. The backup is built in a hidden sibling directory and renamed into place
when complete, so a crash never leaves something that looks like a backup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections import Counter
from contextlib import aclosing
from pathlib import Path
from typing import BinaryIO

from kodestore.errors import KodeStoreError
from kodestore.facade import Store
from kodestore.jsonutil import dumps
from kodestore.models import JSONDict
from kodestore.ops.migrate import BATCH, Progress, numbered, read_agents, side_row_count
from kodestore.validation import ms_to_iso, now_ms

FORMAT = "kodestore-backup"
FORMAT_VERSION = 3  # 2 added messageCreatedAtMs and updatedAtMs to agents.jsonl; 3 added sideRows
READABLE_VERSIONS = (1, 2, 3)  # a line of format 1 restores with the restore's time as its timestamps
COUNTED = ("messages", "toolCalls", "snapshots", "events")
MANIFEST_FILE = "manifest.json"
AGENTS_FILE = "agents.jsonl"
EVENTS_FILE = "events.jsonl"
DATA_FILES = (AGENTS_FILE, EVENTS_FILE)

_KINDS = {"SqliteStore": "sqlite", "PostgresStore": "postgres", "MemoryStore": "memory", "JSONStore": "json"}


def store_kind(store: Store) -> str:
    """``sqlite``, ``postgres``, ``memory`` or ``json`` (the class name for anything else)."""
    for cls in type(store).__mro__:
        if cls.__name__ in _KINDS:
            return _KINDS[cls.__name__]
    return type(store).__name__


class _HashedFile:
    """A file written front to back once, hashed and measured on the way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = open(path, "xb")  # noqa: SIM115 - closed in close()
        self._sha256 = hashlib.sha256()
        self.size = 0

    def write_line(self, data: bytes) -> None:
        line = data + b"\n"
        self._file.write(line)
        self._sha256.update(line)
        self.size += len(line)

    def close(self) -> JSONDict:
        """Flush to disk (a backup that lives only in the page cache is not one) and describe."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return {"size": self.size, "sha256": self._sha256.hexdigest()}

    def __enter__(self) -> _HashedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def file_digest(path: Path) -> JSONDict:
    """Size and sha256 of a file, read in chunks."""
    sha256 = hashlib.sha256()
    size = 0
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha256.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": sha256.hexdigest()}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _write_events(store: Store, agent_id: str, out: _HashedFile) -> int:
    """The agent's log as it is now, read after its state so it reaches the info's bookmark."""
    count = 0
    async with aclosing(store.read_events(agent_id)) as events:
        async for timeline in events:
            out.write_line(dumps({"agentId": agent_id, "timeline": timeline.to_dict()}, "event"))
            count += 1
    return count


async def _write_data(store: Store, directory: Path, progress: Progress | None) -> JSONDict:
    started = now_ms()
    agent_ids = await store.list()
    totals: Counter[str] = Counter()
    with _HashedFile(directory / AGENTS_FILE) as agents, _HashedFile(directory / EVENTS_FILE) as events:
        states = read_agents(store, agent_ids)
        async with aclosing(states):  # a failed write also stops the reads running ahead
            async for done, (agent_id, state) in numbered(states):
                if state is not None:  # None: deleted since it was listed
                    count = await _write_events(store, agent_id, events)
                    agents.write_line(dumps({**state.to_json(), "eventCount": count}, f"agent {agent_id!r}"))
                    totals.update(
                        agents=1,
                        messages=len(state.messages),
                        toolCalls=len(state.tool_calls),
                        snapshots=len(state.snapshots),
                        events=count,
                        sideRows=side_row_count(state),
                    )
                if progress is not None:
                    progress(done, len(agent_ids))
        files = {AGENTS_FILE: agents.close(), EVENTS_FILE: events.close()}
    return {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "createdAt": ms_to_iso(started),
        "completedAt": ms_to_iso(now_ms()),
        "source": {"kind": store_kind(store)},
        "consistency": "batch" if store.consistent_export else "file",  # see docs/operations.md
        "batchSize": BATCH,
        "agents": totals.pop("agents", 0),
        "counts": {key: totals[key] for key in COUNTED},
        "sideRows": totals["sideRows"],  # suspended states, feedback, checkpoint rows (format 3)
        "files": files,
    }


async def backup(
    store: Store, dest_dir: str | os.PathLike[str], *, progress: Progress | None = None
) -> JSONDict:
    """Write a backup of ``store`` to ``dest_dir`` (new, or an empty directory); returns the manifest.

    Writers may keep running: on SQL stores each batch of agents is copied as of one moment (see the
    module docstring).
    """
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise KodeStoreError(f"backup destination {dest} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:12]}"
    partial.mkdir(mode=0o700)
    try:
        manifest = await _write_data(store, partial, progress)
        with open(partial / MANIFEST_FILE, "xb") as file:
            file.write(dumps(manifest, "manifest") + b"\n")
            file.flush()
            os.fsync(file.fileno())
        _fsync_dir(partial)
        if dest.exists():
            dest.rmdir()  # empty, checked above; rename cannot replace a directory on every platform
        os.rename(partial, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest
