"""Copy agents between any two stores, and the agent-level read and write every operation shares.

``read_agent`` and ``write_agent`` are the one place that knows what "everything of an agent" is, so
backup, restore, migrate and the SDK import cannot disagree about it. Writes are idempotent: records
replace, snapshots upsert, and the append-only parts (events, history) only get the tail the target
is missing — so re-running a migration after a crash resumes it and never duplicates an event.
"""

from __future__ import annotations

import asyncio
import functools
import random
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
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kodestore.errors import KodeStoreError, LockTimeout
from kodestore.extended import ExtendedStore
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
STABLE_READ_ATTEMPTS = 20
LOCKED_READ_TIMEOUT_MS = 2000


@dataclass(slots=True)
class AgentState:
    """Everything of one agent except its events (which are streamed, never held whole)."""

    info: AgentInfo
    messages: list[Message] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    todos: TodoSnapshot | None = None
    windows: list[HistoryWindow] = field(default_factory=list)
    compressions: list[CompressionRecord] = field(default_factory=list)
    recovered: list[RecoveredFile] = field(default_factory=list)
    media: list[MediaCacheRecord] = field(default_factory=list)

    @property
    def agent_id(self) -> str:
        return self.info.agent_id

    def to_json(self) -> JSONDict:
        """The portable JSON shape of a backup line (SDK camelCase inside)."""
        return {
            "agentId": self.agent_id,
            "info": self.info.to_dict(),
            "messages": _dicts(self.messages),
            "toolCalls": _dicts(self.tool_calls),
            "snapshots": _dicts(self.snapshots),
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
        return cls(
            info=info,
            messages=_models(Message, data, "messages"),
            tool_calls=_models(ToolCallRecord, data, "toolCalls"),
            snapshots=_models(Snapshot, data, "snapshots"),
            todos=None if todos is None else TodoSnapshot.from_dict(todos),
            windows=_models(HistoryWindow, data, "historyWindows"),
            compressions=_models(CompressionRecord, data, "compressionRecords"),
            recovered=_models(RecoveredFile, data, "recoveredFiles"),
            media=_models(MediaCacheRecord, data, "mediaCache"),
        )


def _dicts(models: Sequence[_Model]) -> list[JSONDict]:
    return [m.to_dict() for m in models]


M = TypeVar("M", bound=_Model)


def _models(model: type[M], data: JSONDict, key: str) -> list[M]:
    values = data.get(key, [])
    if not isinstance(values, list):
        raise ValueError(f"{key} must be a list")
    return [model.from_dict(value) for value in values]


# ---- reading ---------------------------------------------------------------------------------------

Records = tuple[AgentInfo, list[Message], list[ToolCallRecord], list[Snapshot]]


async def _read_records(store: Store, agent_id: str) -> Records | None:
    """One pass over the database half, the four loads at once: the shorter a pass, the likelier
    two passes fit between a busy agent's writes (a pool runs them in parallel)."""
    info, messages, tool_calls, snapshots = await asyncio.gather(
        store.load_info(agent_id),
        store.load_messages(agent_id),
        store.load_tool_call_records(agent_id),
        store.list_snapshots(agent_id),
    )
    return None if info is None else (info, messages, tool_calls, snapshots)


async def _settled_read(store: Store, agent_id: str, attempts: int) -> tuple[bool, Records | None]:
    """(True, records) once two reads in a row agree; (False, None) if ``attempts`` rereads never do."""
    previous = await _read_records(store, agent_id)
    for attempt in range(attempts):
        current = await _read_records(store, agent_id)
        if current == previous:
            return True, current
        previous = current
        # jittered backoff: lands in a writer's pause instead of keeping step with its turns
        await asyncio.sleep(random.uniform(0, min(0.002 * 2**attempt, 0.05)))
    return False, None


async def _stable_records(store: Store, agent_id: str) -> Records | None:
    """The database half of one agent as it was at one moment, through the public API only.

    Each load is its own transaction, so one pass can mix two turns of a busy agent. Two passes that
    agree prove a moment where every part held the value read, for writers that never restore an
    older value (runtimes only move forward). An agent that changes on every pass is read again
    under its agent lock, which a runtime holds while it writes; if it still changes (a writer that
    ignores the lock), this raises rather than return a torn agent.
    """
    settled, records = await _settled_read(store, agent_id, STABLE_READ_ATTEMPTS)
    if not settled and isinstance(store, ExtendedStore):
        with suppress(LockTimeout):
            async with store.agent_lock(agent_id, timeout_ms=LOCKED_READ_TIMEOUT_MS):
                settled, records = await _settled_read(store, agent_id, 2)
    if not settled:
        raise KodeStoreError(
            f"agent {agent_id!r} changed during every read; pause its writer (or let it hold the"
            " agent lock while it writes) and retry"
        )
    return records


async def read_agent(store: Store, agent_id: str) -> AgentState | None:
    """Everything of one agent but its events; ``None`` when it has no info (deleted meanwhile).

    Files are read after the database part, so the event log read next always reaches at least the
    bookmark in the info (a runtime appends events before it saves the info that points at them).
    """
    records = await _stable_records(store, agent_id)
    if records is None:
        return None
    todos, windows, compressions, recovered, media = await asyncio.gather(
        store.load_todos(agent_id),
        store.load_history_windows(agent_id),
        store.load_compression_records(agent_id),
        store.load_recovered_files(agent_id),
        store.load_media_cache(agent_id),
    )
    return AgentState(*records, todos, windows, compressions, recovered, media)


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


async def write_agent(store: Store, state: AgentState, *, fresh: bool = False) -> None:
    """Make ``store`` hold ``state`` for this agent; writing the same state twice changes nothing.

    ``fresh=True`` promises the store holds nothing of this agent (a restore into an emptied store),
    which skips reading what is there before appending.
    """
    agent_id = state.agent_id
    await store.clear_tombstone(agent_id)  # copying an agent in is a deliberate re-creation
    await store.save_turn(
        agent_id, messages=state.messages, tool_call_records=state.tool_calls, info=state.info
    )
    if state.info.message_count != len(state.messages):
        await store.save_info(agent_id, state.info)  # the source's info said otherwise: keep its word
    for snapshot in state.snapshots:
        await store.save_snapshot(agent_id, snapshot)
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


async def _copy_agent(source: Store, target: Store, agent_id: str) -> tuple[Copied, int] | None:
    state = await read_agent(source, agent_id)
    if state is None:  # deleted from the source since it was listed: nothing to copy
        return None
    await write_agent(target, state)
    events = await append_missing_events(target, agent_id, source.read_events(agent_id))
    return Copied(len(state.messages), len(state.tool_calls), events), len(state.snapshots)


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
    ``KodeStoreError``. Returns the totals copied.
    """
    agent_ids = await source_store.list()
    copied: dict[str, Copied] = {}
    snapshots = 0
    copies = in_order(agent_ids, functools.partial(_copy_agent, source_store, target_store))
    async with aclosing(copies):
        async for done, (agent_id, result) in numbered(copies):
            if result is not None:
                copied[agent_id] = result[0]
                snapshots += result[1]
            if progress is not None:
                progress(done, len(agent_ids))
    await _verify(target_store, copied)
    return {
        "agents": len(copied),
        "messages": sum(c.messages for c in copied.values()),
        "toolCalls": sum(c.tool_calls for c in copied.values()),
        "events": sum(c.events for c in copied.values()),
        "snapshots": snapshots,
    }
