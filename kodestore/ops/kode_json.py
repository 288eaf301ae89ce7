"""Import a directory written by the TypeScript KODE SDK's ``JSONStore`` into any store.

That SDK keeps, under ``<base>/<agentId>/``: ``meta.json`` (the AgentInfo); ``runtime/messages.json``
and ``runtime/tool-calls.json``, each with a ``.wal`` holding ``{"data", "timestamp"}`` of a save that
may not have reached the main file; ``runtime/todos.json`` and ``runtime/media-cache.json``;
``events/<channel>.log`` per channel with a ``<channel>.wal`` of lines not yet flushed into the log;
``history/windows/*.json``, ``history/compressions/*.json``, ``history/recovered/*`` and
``snapshots/*.json``.

WAL files are recovered as that SDK does on start-up: a readable runtime WAL wins over its main file;
event WAL lines follow their log's lines. A line that does not parse (a torn tail of a crashed write)
is skipped as that SDK's reader skips it, and an event written to both the log and the WAL (a crash
between the flush and the WAL rewrite) is kept once, by ``bookmark.seq``. The channels are merged into
one stream ordered by ``bookmark.seq``. Importing the same directory twice changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kodestore.errors import KodeStoreError
from kodestore.facade import Store, check_timeline
from kodestore.jsonutil import loads
from kodestore.models import (
    EVENT_CHANNELS,
    AgentInfo,
    CompressionRecord,
    HistoryWindow,
    JSONDict,
    MediaCacheRecord,
    Message,
    RecoveredFile,
    Snapshot,
    Timeline,
    TodoSnapshot,
    ToolCallRecord,
    _Model,
)
from kodestore.ops.migrate import AgentState, Progress, append_missing_events, write_agent
from kodestore.validation import validate_agent_id

M = TypeVar("M", bound=_Model)
_RECOVERED_HEADER = re.compile(rb"# Recovered: (.*)\n# Timestamp: (\d+)\n# Mtime: (\d+)\n\n", re.DOTALL)


@dataclass(slots=True)
class SdkAgent:
    """One agent as read from the SDK's directory, ready to write."""

    state: AgentState
    events: list[Timeline]
    skipped_lines: int = 0


@dataclass(slots=True)
class ImportReport:
    agents: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (directory, why)
    messages: int = 0
    tool_calls: int = 0
    events: int = 0
    skipped_event_lines: int = 0

    def to_dict(self) -> JSONDict:
        return {
            "agents": len(self.agents),
            "messages": self.messages,
            "toolCalls": self.tool_calls,
            "events": self.events,
            "skippedEventLines": self.skipped_event_lines,
            "skipped": [{"agentId": name, "reason": why} for name, why in self.skipped],
        }


# ---- reading the SDK's files (blocking; run in a thread) -----------------------------------------


def _json(path: Path) -> Any:
    """The parsed file, or ``None`` when it does not exist."""
    try:
        return loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ValueError(f"{path.name}: not valid JSON ({exc})") from exc


def _runtime(directory: Path, name: str) -> Any:
    """``name`` as the SDK would load it: from a readable WAL first, else from the main file."""
    try:
        wal = loads((directory / f"{name}.wal").read_bytes())
    except (FileNotFoundError, ValueError):
        wal = None  # the SDK sets an unreadable WAL aside and uses the main file
    if isinstance(wal, dict) and "data" in wal:
        return wal["data"]
    return _json(directory / f"{name}.json")


def _list(model: type[M], value: Any, what: str) -> list[M]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a JSON array")
    return [model.from_dict(item) for item in value]


def _lines(path: Path) -> list[bytes]:
    try:
        return [line for line in path.read_bytes().split(b"\n") if line.strip()]
    except FileNotFoundError:
        return []


def _events(directory: Path) -> tuple[list[Timeline], int]:
    """Every channel's log then WAL lines, unreadable lines skipped, each seq once, ordered by seq."""
    events: list[Timeline] = []
    seen: set[int] = set()
    skipped = 0
    for channel in EVENT_CHANNELS:
        for suffix in (".log", ".wal"):
            for line in _lines(directory / f"{channel}{suffix}"):
                try:
                    timeline = Timeline.from_dict(loads(line))
                    check_timeline(timeline)
                except (KeyError, TypeError, ValueError):
                    skipped += 1
                    continue
                if timeline.bookmark.seq not in seen:
                    seen.add(timeline.bookmark.seq)
                    events.append(timeline)
    events.sort(key=lambda timeline: timeline.bookmark.seq)
    return events, skipped


def _recovered_file(path: Path) -> RecoveredFile:
    if path.suffix == ".json":
        return RecoveredFile.from_dict(_json(path))
    data = path.read_bytes()
    header = _RECOVERED_HEADER.match(data)
    if header is None:
        raise ValueError(f"history/recovered/{path.name}: no '# Recovered:' header")
    return RecoveredFile(
        path=header[1].decode(),
        content=data[header.end() :].decode(),
        mtime=int(header[3]),
        timestamp=int(header[2]),
    )


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def _history(directory: Path, model: type[M]) -> list[M]:
    records = [model.from_dict(_json(path)) for path in _files(directory) if path.suffix == ".json"]
    records.sort(key=lambda record: getattr(record, "timestamp", 0))
    return records


def read_sdk_agent(directory: Path) -> SdkAgent:
    """Everything the SDK wrote for one agent; ``ValueError`` when a file cannot be used."""
    info_data = _json(directory / "meta.json")
    if info_data is None:
        raise ValueError("no meta.json")
    info = AgentInfo.from_dict(info_data)
    if info.agent_id != directory.name:
        raise ValueError(f"meta.json says agentId {info.agent_id!r}")
    runtime = directory / "runtime"
    todos = _json(runtime / "todos.json")
    recovered = [_recovered_file(p) for p in _files(directory / "history" / "recovered")]
    recovered.sort(key=lambda record: record.timestamp)
    snapshots = [Snapshot.from_dict(_json(p)) for p in _files(directory / "snapshots") if p.suffix == ".json"]
    snapshots.sort(key=lambda snapshot: (snapshot.created_at, snapshot.id))
    events, skipped = _events(directory / "events")
    state = AgentState(
        info=info,
        messages=_list(Message, _runtime(runtime, "messages"), "messages"),
        tool_calls=_list(ToolCallRecord, _runtime(runtime, "tool-calls"), "tool-calls"),
        snapshots=snapshots,
        todos=None if todos is None else TodoSnapshot.from_dict(todos),
        windows=_history(directory / "history" / "windows", HistoryWindow),
        compressions=_history(directory / "history" / "compressions", CompressionRecord),
        recovered=recovered,
        media=_list(MediaCacheRecord, _json(runtime / "media-cache.json"), "media-cache"),
    )
    return SdkAgent(state, events, skipped)


async def _iterate(events: list[Timeline]) -> AsyncIterator[Timeline]:
    for event in events:
        yield event


def _agent_dirs(base: Path) -> list[Path]:
    try:
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        raise KodeStoreError(f"{base} is not a directory") from None


# ---- import -----------------------------------------------------------------------------------------


async def import_kode_json(
    src_dir: str | os.PathLike[str], store: Store, *, progress: Progress | None = None
) -> ImportReport:
    """Import every agent of a TypeScript-SDK ``JSONStore`` directory into ``store``.

    An agent whose files cannot be used (no ``meta.json``, an invalid id, a broken JSON file) is
    skipped whole and listed in the report with the reason; the others are imported.
    """
    base = Path(src_dir)
    directories = await asyncio.to_thread(_agent_dirs, base)
    report = ImportReport()
    for done, directory in enumerate(directories, 1):
        try:
            validate_agent_id(directory.name)
            agent = await asyncio.to_thread(read_sdk_agent, directory)
        except (KeyError, TypeError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            report.skipped.append((directory.name, str(exc)))
        else:
            await write_agent(store, agent.state)
            await append_missing_events(store, directory.name, _iterate(agent.events))
            report.agents.append(directory.name)
            report.messages += len(agent.state.messages)
            report.tool_calls += len(agent.state.tool_calls)
            report.events += len(agent.events)
            report.skipped_event_lines += agent.skipped_lines
        if progress is not None:
            progress(done, len(directories))
    return report
