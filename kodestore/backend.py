"""The two halves a store is made of, as the facade sees them.

``RecordBackend`` holds agent info, messages, tool calls and snapshots (SQL databases, or JSON files
for ``JSONStore``). ``RuntimeFiles`` holds the append-heavy data: events, todos, history, media cache
(JSONL on disk, or memory). Arguments are already validated by the facade; values are plain JSON
dicts in the SDK's shape, or models where the backend needs to serialise them itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from kodestore.models import AgentInfo, JSONDict, Message, Snapshot, ToolCallRecord

T = TypeVar("T")
Slice = tuple[Sequence[T], int]  # items of a list from position ``start`` on: (items, start)

HistoryKind = Literal["windows", "compressions", "recovered"]


@dataclass(slots=True)
class AgentRecords:
    """The database half of one agent, as ``export_agents`` reads it and ``import_agent`` writes it.

    Models rather than dicts: an export goes straight into another store's import. The two
    timestamps are what queries sort and filter by and no load returns: ``message_created_at`` holds
    each message's first-save time (epoch ms, one per message) and ``updated_at_ms`` the agent's last
    update. ``None`` where the store keeps none (``JSONStore``); an import then stamps its own time.

    ``side_rows`` holds the agent's rows of the side tables (suspended states, feedback, LangGraph
    checkpoints: ``kodestore.db.side_tables.SIDE_TABLES``), table -> rows of that table's columns without
    the owner column, bytes as bytes and JSON as text. SQL stores export and import them; ``JSONStore``
    has none and refuses to import any.
    """

    info: AgentInfo
    messages: list[Message] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    message_created_at: list[int] | None = None
    updated_at_ms: int | None = None
    side_rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)

    def check(self) -> None:
        """``ValueError`` for timestamps that do not fit the messages, or a snapshot id seen twice."""
        created = self.message_created_at
        if created is not None:
            if not isinstance(created, list) or not all(_is_ms(ms) for ms in created):
                raise ValueError("message_created_at must be a list of epoch milliseconds")
            if len(created) != len(self.messages):
                raise ValueError(
                    f"message_created_at holds {len(created)} times for {len(self.messages)} messages"
                )
        if self.updated_at_ms is not None and not _is_ms(self.updated_at_ms):
            raise ValueError(f"updated_at_ms must be epoch milliseconds, got {self.updated_at_ms!r}")
        ids = [snapshot.id for snapshot in self.snapshots]
        if len(set(ids)) != len(ids):
            raise ValueError("snapshots: the same snapshot id appears twice")


def _is_ms(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class RecordBackend(ABC):
    #: ``export_agents`` reads all the agents it is given as of one moment
    consistent_export = False
    #: the store holds side rows (suspended states, feedback, checkpoints) and carries them
    keeps_side_rows = False

    async def export_agents(self, agent_ids: Sequence[str]) -> dict[str, AgentRecords]:
        """The records of each agent that has info, in the order given.

        This default reads agent by agent through the loads, so there is no common moment, not even
        within one agent; backends with transactions override it with one snapshot."""
        found: dict[str, AgentRecords] = {}
        for agent_id in dict.fromkeys(agent_ids):
            info = await self.load_info(agent_id)
            if info is not None:
                found[agent_id] = AgentRecords(
                    AgentInfo.from_dict(info),
                    [Message.from_dict(m) for m in await self.load_messages(agent_id)],
                    [ToolCallRecord.from_dict(r) for r in await self.load_tool_calls(agent_id)],
                    [Snapshot.from_dict(s) for s in await self.list_snapshots(agent_id)],
                )
        return found

    @abstractmethod
    async def import_agent(self, records: AgentRecords, now_ms: int) -> None:
        """Replace whatever the store holds of the agent with ``records`` (checked), as one
        transaction where the backend has them; a tombstone does not stop it (importing is a
        deliberate re-creation). A missing timestamp becomes ``now_ms``, except that a message the
        store already holds keeps its first-save time, so importing the same data twice changes
        nothing; a backend without timestamps drops them."""

    async def refresh_statistics(self) -> None:
        """Refresh the query planner's statistics after a bulk load; nothing where there is no planner."""
        return None

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def save_info(self, info: AgentInfo, now_ms: int) -> bool:
        """Insert or replace; ``AgentDeleted`` when the agent was deleted after ``info.created_at``.
        ``False`` only when it replaced the info of an agent already stored (not deleted since)."""

    @abstractmethod
    async def load_info(self, agent_id: str) -> JSONDict | None: ...

    @abstractmethod
    async def save_messages(self, agent_id: str, messages: Sequence[Message], now_ms: int) -> None:
        """Replace the history and set the info's message count; ``AgentNotFound`` without info."""

    @abstractmethod
    async def load_messages(self, agent_id: str) -> list[JSONDict]: ...

    @abstractmethod
    async def save_tool_calls(
        self, agent_id: str, records: Sequence[ToolCallRecord], now_ms: int
    ) -> None: ...

    @abstractmethod
    async def load_tool_calls(self, agent_id: str) -> list[JSONDict]: ...

    @abstractmethod
    async def save_turn(
        self,
        agent_id: str,
        messages: Slice[Message] | None,
        tool_calls: Slice[ToolCallRecord] | None,
        info: AgentInfo | None,
        now_ms: int,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Everything one turn changed, atomically where the backend can. ``(items, start)``
        replaces the stored list from position ``start`` on (``ValueError`` if fewer are stored);
        ``before`` runs once everything is validated, right before the first write. Returns what
        ``save_info`` returns, with an ``info``; else ``False``."""

    @abstractmethod
    async def save_snapshot(self, agent_id: str, snapshot: Snapshot, now_ms: int) -> None: ...

    @abstractmethod
    async def load_snapshot(self, agent_id: str, snapshot_id: str) -> JSONDict | None: ...

    @abstractmethod
    async def list_snapshots(self, agent_id: str) -> list[JSONDict]: ...

    @abstractmethod
    async def exists(self, agent_id: str) -> bool: ...

    @abstractmethod
    async def delete(self, agent_id: str, now_ms: int) -> None:
        """Remove the agent's records and leave a tombstone dated ``now_ms`` (see ``save_info``)."""

    @abstractmethod
    async def clear_tombstone(self, agent_id: str) -> None:
        """Forget a deletion, so an info of any age may re-create the agent (restore, migrate)."""

    @abstractmethod
    async def list_agents(self, prefix: str | None) -> list[str]: ...


@dataclass(slots=True)
class EventLogReport:
    """What a full read of one agent's event log found (for ``check_consistency``)."""

    lines: int = 0
    max_seq: int | None = None
    torn_tail: bool = False
    corrupt_lines: list[int] = field(default_factory=list)  # 1-based line numbers
    duplicate_seqs: list[int] = field(default_factory=list)


class RuntimeFiles(ABC):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def append_events(self, agent_id: str, *events: JSONDict) -> None:
        """Append Timeline dicts as one write; returns once written to the OS (or fsynced)."""

    @abstractmethod
    def read_events(
        self, agent_id: str, since_seq: int | None, channel: str | None
    ) -> AsyncGenerator[JSONDict, None]:
        """Timeline dicts in append order, only ``bookmark.seq > since_seq``, only ``channel``."""

    @abstractmethod
    async def save_todos(self, agent_id: str, todos: JSONDict) -> None: ...

    @abstractmethod
    async def load_todos(self, agent_id: str) -> JSONDict | None: ...

    @abstractmethod
    async def append_history(self, agent_id: str, kind: HistoryKind, record: JSONDict) -> None: ...

    @abstractmethod
    async def load_history(self, agent_id: str, kind: HistoryKind) -> list[JSONDict]: ...

    @abstractmethod
    async def save_media_cache(self, agent_id: str, records: list[JSONDict]) -> None: ...

    @abstractmethod
    async def load_media_cache(self, agent_id: str) -> list[JSONDict]: ...

    @abstractmethod
    async def delete_agent(self, agent_id: str, deleted_at_ms: int) -> None:
        """Remove the agent's files and leave a tombstone: later writes raise ``AgentDeleted``."""

    @abstractmethod
    async def revive(self, agent_id: str, recreated: bool = True) -> None:
        """Remove the tombstone (the agent is being created again). ``recreated=False``: the records
        replaced the info of a stored agent, so a tombstone can only be one a crash left behind; a
        half may then skip the work once it has revived the agent in this process."""

    @abstractmethod
    async def agent_ids(self) -> list[str]:
        """Agents that have any file."""

    @abstractmethod
    async def inspect_events(self, agent_id: str) -> EventLogReport: ...

    @abstractmethod
    async def size_bytes(self) -> int: ...

    @abstractmethod
    async def check_writable(self) -> str | None:
        """``None`` when a write would succeed, else why not."""
