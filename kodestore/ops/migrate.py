"""Copy agents between any two stores, and the agent-level read and write every operation shares.

``read_agents`` / ``for_each_agent`` and ``write_agent`` are the one place that knows what "everything
of an agent" is, so backup, restore, migrate and the SDK import cannot disagree about it. Reads take
the database half of a batch of agents in one snapshot (``Store.export_agents``). Writes are
idempotent: the database half is replaced in one transaction with its timestamps
(``Store.import_agent``), and the append-only parts (events, history) only get the tail the target is
missing — so re-running a migration after a crash resumes it and never duplicates an event.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Sequence,
)
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kodestore.backend import AgentRecords
from kodestore.db.side_tables import check_side_rows
from kodestore.errors import KodeStoreError
from kodestore.facade import Store
from kodestore.models import (
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

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]
"""Called with (agents done, agents in total) after each agent."""

WINDOW = 8  # agents in flight at once
BATCH = 100  # agents per export: one database snapshot, one round trip per table


@dataclass(slots=True)
class AgentState(AgentRecords):
    """Everything of one agent except its events (which are streamed, never held whole): its
    database half (``AgentRecords``, timestamps included) and its files."""

    todos: TodoSnapshot | None = None
    windows: list[HistoryWindow] = field(default_factory=list)
    compressions: list[CompressionRecord] = field(default_factory=list)
    recovered: list[RecoveredFile] = field(default_factory=list)
    media: list[MediaCacheRecord] = field(default_factory=list)

    @property
    def agent_id(self) -> str:
        return self.info.agent_id

    @property
    def records(self) -> AgentRecords:
        """The database half alone, comparable with what ``export_agents`` returns."""
        return AgentRecords(
            self.info,
            self.messages,
            self.tool_calls,
            self.snapshots,
            self.message_created_at,
            self.updated_at_ms,
            self.side_rows,
        )

    def to_json(self) -> JSONDict:
        """The portable JSON shape of a backup line (SDK camelCase inside)."""
        return {
            "agentId": self.agent_id,
            "info": self.info.to_dict(),
            "messages": _dicts(self.messages),
            "toolCalls": _dicts(self.tool_calls),
            "snapshots": _dicts(self.snapshots),
            "messageCreatedAtMs": self.message_created_at,
            "updatedAtMs": self.updated_at_ms,
            "sideRows": side_rows_to_json(self.side_rows),
            "todos": None if self.todos is None else self.todos.to_dict(),
            "historyWindows": _dicts(self.windows),
            "compressionRecords": _dicts(self.compressions),
            "recoveredFiles": _dicts(self.recovered),
            "mediaCache": _dicts(self.media),
        }

    @classmethod
    def from_json(cls, data: Any) -> AgentState:
        """Parse and validate a backup line; ``ValueError`` names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("an agent record must be a JSON object")
        info = AgentInfo.from_dict(data["info"])
        if info.agent_id != data.get("agentId"):
            raise ValueError(f"agentId {data.get('agentId')!r} differs from info.agentId {info.agent_id!r}")
        todos = data.get("todos")
        state = cls(
            info=info,
            messages=_models(Message, data, "messages"),
            tool_calls=_models(ToolCallRecord, data, "toolCalls"),
            snapshots=_models(Snapshot, data, "snapshots"),
            message_created_at=data.get("messageCreatedAtMs"),  # absent from format 1
            updated_at_ms=data.get("updatedAtMs"),
            side_rows=side_rows_from_json(data.get("sideRows", {})),  # absent before format 3
            todos=None if todos is None else TodoSnapshot.from_dict(todos),
            windows=_models(HistoryWindow, data, "historyWindows"),
            compressions=_models(CompressionRecord, data, "compressionRecords"),
            recovered=_models(RecoveredFile, data, "recoveredFiles"),
            media=_models(MediaCacheRecord, data, "mediaCache"),
        )
        state.check()
        return state


def _value_to_json(value: Any) -> Any:
    return {"$b64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value


def _value_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) != {"$b64"} or not isinstance(value["$b64"], str):
            raise ValueError('sideRows: an object value must be {"$b64": "<base64>"}')
        return base64.b64decode(value["$b64"], validate=True)
    if isinstance(value, list | float | bool):
        raise ValueError(f"sideRows: unexpected value {value!r}")
    return value


def side_rows_to_json(side_rows: dict[str, list[tuple[Any, ...]]]) -> JSONDict:
    """``AgentRecords.side_rows`` as JSON: rows as arrays, bytes as ``{"$b64": ...}``."""
    return {
        table: [[_value_to_json(value) for value in row] for row in rows]
        for table, rows in side_rows.items()
        if rows
    }


def side_rows_from_json(data: Any) -> dict[str, list[tuple[Any, ...]]]:
    """The inverse of ``side_rows_to_json``; ``ValueError`` names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("sideRows must be an object")
    side_rows: dict[str, list[tuple[Any, ...]]] = {}
    for table, rows in data.items():
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise ValueError(f"sideRows.{table} must be a list of arrays")
        side_rows[table] = [tuple(_value_from_json(value) for value in row) for row in rows]
    check_side_rows(side_rows)
    return side_rows


def side_row_count(records: AgentRecords) -> int:
    return sum(len(rows) for rows in records.side_rows.values())


def _dicts(models: Sequence[_Model]) -> list[JSONDict]:
    return [m.to_dict() for m in models]


M = TypeVar("M", bound=_Model)


def _models(model: type[M], data: JSONDict, key: str) -> list[M]:
    values = data.get(key, [])
    if not isinstance(values, list):
        raise ValueError(f"{key} must be a list")
    return [model.from_dict(value) for value in values]


# ---- reading ---------------------------------------------------------------------------------------


async def _with_files(store: Store, records: AgentRecords | None) -> AgentState | None:
    """The agent's files added to its exported records (read after them: see ``for_each_agent``)."""
    if records is None:
        return None
    agent_id = records.info.agent_id
    todos, windows, compressions, recovered, media = await asyncio.gather(
        store.load_todos(agent_id),
        store.load_history_windows(agent_id),
        store.load_compression_records(agent_id),
        store.load_recovered_files(agent_id),
        store.load_media_cache(agent_id),
    )
    return AgentState(
        info=records.info,
        messages=records.messages,
        tool_calls=records.tool_calls,
        snapshots=records.snapshots,
        message_created_at=records.message_created_at,
        updated_at_ms=records.updated_at_ms,
        side_rows=records.side_rows,
        todos=todos,
        windows=windows,
        compressions=compressions,
        recovered=recovered,
        media=media,
    )


async def _read_then(
    store: Store,
    exported: dict[str, AgentRecords],
    work: Callable[[AgentState], Coroutine[Any, Any, R]],
    agent_id: str,
) -> R | None:
    state = await _with_files(store, exported.get(agent_id))
    return None if state is None else await work(state)


async def for_each_agent(
    store: Store, agent_ids: Sequence[str], work: Callable[[AgentState], Coroutine[Any, Any, R]]
) -> AsyncGenerator[tuple[str, R | None], None]:
    """``(agent_id, await work(state))`` for each agent in order; ``None`` for an agent without info
    (deleted since it was listed).

    The database half comes ``BATCH`` agents at a time from ``export_agents``: on SQL stores one
    snapshot per batch, so an agent its runtime keeps writing is never read torn. Each agent's files
    are read after its batch, and its event log (by ``work`` or by the caller) later still: a runtime
    appends events before it saves the info pointing at them, so that log reaches the info's bookmark.
    """
    for start in range(0, len(agent_ids), BATCH):
        batch = agent_ids[start : start + BATCH]
        exported = await store.export_agents(batch)
        results = in_order(batch, functools.partial(_read_then, store, exported, work))
        async with aclosing(results):  # a failure downstream also stops the reads running ahead
            async for item in results:
                yield item


async def _same(state: AgentState) -> AgentState:
    return state


def read_agents(
    store: Store, agent_ids: Sequence[str]
) -> AsyncGenerator[tuple[str, AgentState | None], None]:
    """``(agent_id, state)`` for each agent in order, ``None`` for one without info (see
    ``for_each_agent``)."""
    return for_each_agent(store, agent_ids, _same)


# ---- writing ---------------------------------------------------------------------------------------


async def _append_missing(
    agent_id: str,
    what: str,
    stored: Sequence[T],
    wanted: Sequence[T],
    append: Callable[[T], Awaitable[None]],
) -> None:
    """Append the part of ``wanted`` that ``stored`` lacks; refuse when ``stored`` is not its prefix."""
    if len(stored) > len(wanted) or list(stored) != list(wanted[: len(stored)]):
        raise KodeStoreError(f"agent {agent_id!r}: the target's {what} differ from the source's; not merged")
    for item in wanted[len(stored) :]:
        await append(item)


async def write_agent(
    store: Store, state: AgentState, *, fresh: bool = False, held: AgentRecords | None = None
) -> int:
    """Make ``store`` hold ``state`` for this agent; writing the same state twice changes nothing.

    The database half, timestamps included, replaces the store's in one import — unless ``held``,
    what the store held of the agent when the caller exported it, is equal already: a migration run
    again then rewrites no row (on PostgreSQL: no dead tuples, no index churn). ``fresh=True``
    promises the store holds nothing of this agent (a restore into an emptied store), which skips
    reading its files before appending.

    Returns how many side rows (suspended states, feedback, checkpoint rows) were left out because
    the store keeps none (``JSONStore``); 0 otherwise.
    """
    agent_id = state.agent_id
    records = state.records
    dropped = 0
    if records.side_rows and not store.keeps_side_rows:
        dropped = side_row_count(records)
        records.side_rows = {}
    if held != records:
        await store.import_agent(agent_id, records)
    if state.todos is not None:
        await store.save_todos(agent_id, state.todos)
    if state.media or (not fresh and await store.load_media_cache(agent_id)):
        await store.save_media_cache(agent_id, state.media)
    history: list[tuple[str, Any, Any, Sequence[Any]]] = [
        ("history windows", store.load_history_windows, store.save_history_window, state.windows),
        (
            "compression records",
            store.load_compression_records,
            store.save_compression_record,
            state.compressions,
        ),
        ("recovered files", store.load_recovered_files, store.save_recovered_file, state.recovered),
    ]
    for what, load, save, wanted in history:
        stored = [] if fresh else await load(agent_id)
        await _append_missing(agent_id, what, stored, wanted, functools.partial(save, agent_id))
    return dropped


async def event_seqs(store: Store, agent_id: str) -> list[int]:
    return [timeline.bookmark.seq async for timeline in store.read_events(agent_id)]


async def close_iterator(iterator: object) -> None:
    """Close an async generator left mid-way (a cancelled copy) now: it may hold a log file open."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


async def append_missing_events(
    store: Store, agent_id: str, events: AsyncIterable[Timeline], *, fresh: bool = False
) -> int:
    """Append the events the target's log lacks; returns how many the log holds afterwards.

    The target's log must be a prefix of ``events`` (compared by ``bookmark.seq``): appending to a log
    that went its own way would interleave two histories, so that is refused instead. ``fresh=True``
    promises an empty log.
    """
    stored = [] if fresh else await event_seqs(store, agent_id)
    count = 0
    iterator = aiter(events)
    try:
        async for timeline in iterator:
            if count >= len(stored):
                await store.append_event(agent_id, timeline)
            elif stored[count] != timeline.bookmark.seq:
                raise KodeStoreError(
                    f"agent {agent_id!r}: the target's event {count} has seq {stored[count]},"
                    f" the source's {timeline.bookmark.seq}; not merged"
                )
            count += 1
    finally:
        await close_iterator(iterator)
    if count < len(stored):
        raise KodeStoreError(f"agent {agent_id!r}: the target holds more events than the source")
    return count


async def in_order(
    items: Iterable[T], work: Callable[[T], Coroutine[Any, Any, R]], window: int = WINDOW
) -> AsyncGenerator[tuple[T, R], None]:
    """``(item, await work(item))`` for each item in order, with up to ``window`` running at once.

    Per-agent work is mostly waiting (database round trips, thread hops for files); overlapping a few
    agents multiplies throughput while results still come out in order. Items are pulled lazily.
    """
    running: deque[tuple[T, asyncio.Task[R]]] = deque()
    try:
        for item in items:
            running.append((item, asyncio.create_task(work(item))))
            if len(running) >= window:
                head, task = running.popleft()
                yield head, await task
        while running:
            head, task = running.popleft()
            yield head, await task
    finally:
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)


async def numbered(items: AsyncIterator[T]) -> AsyncIterator[tuple[int, T]]:
    """``enumerate`` from 1 for an async iterator."""
    done = 0
    async for item in items:
        done += 1
        yield done, item


# ---- migrate ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Copied:
    """What one agent's copy wrote, to verify the target against afterwards."""

    messages: int
    tool_calls: int
    events: int


@dataclass(slots=True)
class _Extra:
    """What one agent's copy wrote beyond what ``_verify`` checks."""

    snapshots: int
    side_rows: int
    side_rows_dropped: int


async def _copy_agent(
    source: Store, target: Store, held: dict[str, AgentRecords], state: AgentState
) -> tuple[Copied, _Extra]:
    side_rows = side_row_count(state)
    dropped = await write_agent(target, state, held=held.get(state.agent_id))
    events = await append_missing_events(target, state.agent_id, source.read_events(state.agent_id))
    copied = Copied(len(state.messages), len(state.tool_calls), events)
    return copied, _Extra(len(state.snapshots), side_rows - dropped, dropped)


async def _found(target: Store, agent_id: str) -> Copied | None:
    if not await target.exists(agent_id):
        return None
    messages, tool_calls, events = await asyncio.gather(
        target.load_messages(agent_id), target.load_tool_call_records(agent_id), event_seqs(target, agent_id)
    )
    return Copied(len(messages), len(tool_calls), len(events))


async def _verify(target: Store, copied: dict[str, Copied]) -> None:
    problems = []
    checks = in_order(copied, functools.partial(_found, target))
    async with aclosing(checks):
        async for agent_id, found in checks:
            if found != copied[agent_id]:
                problems.append(f"{agent_id}: expected {copied[agent_id]}, found {found or 'no agent'}")
    if problems:
        shown = "; ".join(problems[:5])
        raise KodeStoreError(f"migration verification failed for {len(problems)} agent(s): {shown}")


async def migrate(
    source_store: Store, target_store: Store, *, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every agent of ``source_store`` into ``target_store`` (database rows and files).

    Idempotent and resumable: run it again after an interruption and it finishes the job; agents
    already copied are rewritten to the same values and get no duplicate events or history. The
    target is verified at the end (agents, messages, tool calls, events); a difference raises
    ``KodeStoreError``. Returns the totals copied; when the source holds side rows (suspended states,
    feedback, LangGraph checkpoints) also ``sideRows``, the ones copied, and ``sideRowsDropped``, the
    ones a target without them (``JSONStore``) left out.
    """
    agent_ids = await source_store.list()
    copied: dict[str, Copied] = {}
    snapshots = side_rows = dropped = 0
    done = 0
    for start in range(0, len(agent_ids), BATCH):
        batch = agent_ids[start : start + BATCH]
        held = await target_store.export_agents(batch)  # what an earlier run already copied
        copy = functools.partial(_copy_agent, source_store, target_store, held)
        copies = for_each_agent(source_store, batch, copy)
        async with aclosing(copies):
            async for agent_id, result in copies:
                if result is not None:  # None: deleted from the source since it was listed
                    copied[agent_id] = result[0]
                    snapshots += result[1].snapshots
                    side_rows += result[1].side_rows
                    dropped += result[1].side_rows_dropped
                done += 1
                if progress is not None:
                    progress(done, len(agent_ids))
    await target_store.refresh_statistics()
    await _verify(target_store, copied)
    totals = {
        "agents": len(copied),
        "messages": sum(c.messages for c in copied.values()),
        "toolCalls": sum(c.tool_calls for c in copied.values()),
        "events": sum(c.events for c in copied.values()),
        "snapshots": snapshots,
    }
    if side_rows or dropped:
        totals.update(sideRows=side_rows, sideRowsDropped=dropped)
    return totals
