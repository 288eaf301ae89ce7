"""``RuntimeFiles`` in this process's memory: the disk behaviour without any I/O, for tests.

Values are kept JSON-encoded, so saving refuses what the disk would refuse, every load returns a fresh
copy, and nobody can change stored data through a reference.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from kodestore.backend import EventLogReport, HistoryKind, RuntimeFiles
from kodestore.errors import AgentDeleted
from kodestore.files.eventlog import event_channel, event_seq
from kodestore.jsonutil import dumps, loads
from kodestore.models import JSONDict


@dataclass(slots=True)
class _StoredEvent:
    seq: int | None  # None: the disk would skip this line as corrupt
    channel: object
    data: bytes


@dataclass(slots=True)
class _AgentData:
    events: list[_StoredEvent] = field(default_factory=list)
    history: dict[str, list[bytes]] = field(default_factory=dict)
    values: dict[str, bytes] = field(default_factory=dict)  # todos, media cache


class MemoryFiles(RuntimeFiles):
    """Events, todos, history and media cache per agent, in dicts."""

    def __init__(self) -> None:
        self._agents: dict[str, _AgentData] = {}
        self._deleted: set[str] = set()  # tombstones: writes refused until the agent is re-created

    def __repr__(self) -> str:
        return f"MemoryFiles({len(self._agents)} agents)"

    def _agent(self, agent_id: str) -> _AgentData:
        """The agent's data for writing; refused for a deleted agent, as on disk."""
        if agent_id in self._deleted:
            raise AgentDeleted(f"agent {agent_id!r} was deleted; a late write was refused")
        return self._agents.setdefault(agent_id, _AgentData())

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def append_events(self, agent_id: str, *events: JSONDict) -> None:
        stored = [_StoredEvent(event_seq(e), event_channel(e), dumps(e, "event")) for e in events]
        self._agent(agent_id).events.extend(stored)

    async def read_events(
        self, agent_id: str, since_seq: int | None, channel: str | None
    ) -> AsyncGenerator[JSONDict, None]:
        agent = self._agents.get(agent_id)
        for stored in agent.events if agent else ():
            if stored.seq is None or (since_seq is not None and stored.seq <= since_seq):
                continue
            if channel is None or stored.channel == channel:
                yield loads(stored.data)

    async def inspect_events(self, agent_id: str) -> EventLogReport:
        agent = self._agents.get(agent_id)
        events = agent.events if agent else []
        report = EventLogReport(lines=len(events))
        seen: set[int] = set()
        duplicates: set[int] = set()
        for number, stored in enumerate(events, 1):
            if stored.seq is None:
                report.corrupt_lines.append(number)
                continue
            if stored.seq in seen:
                duplicates.add(stored.seq)
            seen.add(stored.seq)
        report.max_seq = max(seen) if seen else None
        report.duplicate_seqs = sorted(duplicates)
        return report

    async def _save(self, agent_id: str, name: str, value: Any) -> None:
        data = dumps(value, name)
        self._agent(agent_id).values[name] = data

    def _load(self, agent_id: str, name: str) -> Any:
        agent = self._agents.get(agent_id)
        data = agent.values.get(name) if agent else None
        return None if data is None else loads(data)

    async def save_todos(self, agent_id: str, todos: JSONDict) -> None:
        await self._save(agent_id, "todos", todos)

    async def load_todos(self, agent_id: str) -> JSONDict | None:
        todos: JSONDict | None = self._load(agent_id, "todos")
        return todos

    async def save_media_cache(self, agent_id: str, records: list[JSONDict]) -> None:
        await self._save(agent_id, "mediaCache", records)

    async def load_media_cache(self, agent_id: str) -> list[JSONDict]:
        records: list[JSONDict] | None = self._load(agent_id, "mediaCache")
        return records or []

    async def append_history(self, agent_id: str, kind: HistoryKind, record: JSONDict) -> None:
        data = dumps(record, f"history.{kind}")
        self._agent(agent_id).history.setdefault(kind, []).append(data)

    async def load_history(self, agent_id: str, kind: HistoryKind) -> list[JSONDict]:
        agent = self._agents.get(agent_id)
        return [loads(data) for data in agent.history.get(kind, ())] if agent else []

    async def delete_agent(self, agent_id: str, deleted_at_ms: int) -> None:
        self._agents.pop(agent_id, None)
        self._deleted.add(agent_id)

    async def revive(self, agent_id: str, recreated: bool = True) -> None:
        self._deleted.discard(agent_id)

    async def agent_ids(self) -> list[str]:
        return sorted(self._agents)

    async def size_bytes(self) -> int:
        """Bytes the same data would take on disk, one newline per log line included."""
        total = 0
        for agent in self._agents.values():
            total += sum(len(stored.data) + 1 for stored in agent.events)
            total += sum(len(data) + 1 for records in agent.history.values() for data in records)
            total += sum(len(data) for data in agent.values.values())
        return total

    async def check_writable(self) -> str | None:
        return None
