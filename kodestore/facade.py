"""``Store`` -> ``QueryableStore`` -> ``ExtendedStore``: every rule shared by all backends, once.

The facade validates arguments before anything is read or written, converts between models and the
backends' JSON dicts, routes each kind of data to its half (records or runtime files) and times every
call for ``get_metrics``. Backends only store.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from contextlib import aclosing
from itertools import repeat
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from kodestore.backend import AgentRecords, HistoryKind, RecordBackend, RuntimeFiles
from kodestore.errors import StoreClosed
from kodestore.metrics import Metrics, OperationKind
from kodestore.models import (
    EVENT_CHANNELS,
    AgentInfo,
    Bookmark,
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
from kodestore.validation import check_choice, now_ms, validate_agent_id

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=_Model)
S = TypeVar("S", bound="Store")
Method = Callable[Concatenate[S, P], Coroutine[Any, Any, R]]


def operation(kind: OperationKind) -> Callable[[Method[S, P, R]], Method[S, P, R]]:
    """Refuse calls on a closed store, validate a leading agent id, and time the call."""

    def decorate(method: Method[S, P, R]) -> Method[S, P, R]:
        parameter = inspect.signature(method).parameters.get("agent_id")
        takes_agent_id = parameter is not None
        agent_id_optional = parameter is not None and parameter.default is None

        @functools.wraps(method)
        async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            self._ensure_open()
            if takes_agent_id:
                agent_id = args[0] if args else kwargs.get("agent_id")
                if agent_id is not None or not agent_id_optional:
                    validate_agent_id(agent_id)
            started = time.perf_counter()
            try:
                return await method(self, *args, **kwargs)
            finally:
                self.metrics.record(kind, (time.perf_counter() - started) * 1000)

        return wrapper

    return decorate


def coerce(model: type[M], value: M | JSONDict, what: str) -> M:
    """Accept a model or its SDK-shaped dict; anything else is a ``ValueError`` naming ``what``."""
    if isinstance(value, model):
        return value
    if isinstance(value, dict):
        try:
            return model.from_dict(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {exc}") from exc
    raise ValueError(f"{what} must be a {model.__name__} or a dict, got {type(value).__name__}")


def coerce_all(model: type[M], values: Sequence[M | JSONDict], what: str) -> list[M]:
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Sequence):
        raise ValueError(f"{what} must be a list of {model.__name__}")
    if all(map(isinstance, values, repeat(model))):  # a runtime's models: checked at C speed
        return list(values)  # type: ignore[arg-type]
    return [coerce(model, value, f"{what}[{index}]") for index, value in enumerate(values)]


def check_start(start: int, items: object, what: str, items_name: str) -> None:
    """A list position: an int >= 0, and 0 unless the list it places is given."""
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {start!r}")
    if start and items is None:
        raise ValueError(f"{what} is {start} but no {items_name} were given")


def check_timeline(timeline: Timeline) -> None:
    if not isinstance(timeline.bookmark.seq, int) or isinstance(timeline.bookmark.seq, bool):
        raise ValueError("timeline.bookmark.seq must be an integer")
    if not isinstance(timeline.event, dict):
        raise ValueError("timeline.event must be a dict")
    check_choice(timeline.event.get("channel"), "timeline.event.channel", EVENT_CHANNELS)


class Store:
    """The runtime's store: state, events, history, media, snapshots, metadata."""

    def __init__(self, records: RecordBackend, files: RuntimeFiles) -> None:
        self._records = records
        self._files = files
        self.metrics = Metrics()
        self._state = "new"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe()} {self._state}>"

    def _describe(self) -> str:
        return ""

    # ---- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> Self:
        if self._state == "new":
            await self._files.open()
            try:
                await self._records.open()
            except BaseException:
                await self._files.close()
                raise
            self._state = "open"
        return self

    async def close(self) -> None:
        if self._state == "open":
            self._state = "closed"
            await self._records.close()
            await self._files.close()
        self._state = "closed"

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _ensure_open(self) -> None:
        if self._state != "open":
            raise StoreClosed(
                "store is closed" if self._state == "closed" else "store is not open; await store.open()"
            )

    # ---- runtime state ---------------------------------------------------------------------------

    @operation("saves")
    async def save_messages(self, agent_id: str, messages: Sequence[Message | JSONDict]) -> None:
        """Replace the history; writes only messages that are new or changed."""
        await self._records.save_messages(agent_id, coerce_all(Message, messages, "messages"), now_ms())

    @operation("loads")
    async def load_messages(self, agent_id: str) -> builtins.list[Message]:
        return [Message.from_dict(m) for m in await self._records.load_messages(agent_id)]

    @operation("saves")
    async def save_tool_call_records(
        self, agent_id: str, records: Sequence[ToolCallRecord | JSONDict]
    ) -> None:
        await self._records.save_tool_calls(
            agent_id, coerce_all(ToolCallRecord, records, "records"), now_ms()
        )

    @operation("loads")
    async def load_tool_call_records(self, agent_id: str) -> builtins.list[ToolCallRecord]:
        return [ToolCallRecord.from_dict(r) for r in await self._records.load_tool_calls(agent_id)]

    @operation("saves")
    async def save_turn(
        self,
        agent_id: str,
        *,
        messages: Sequence[Message | JSONDict] | None = None,
        tool_call_records: Sequence[ToolCallRecord | JSONDict] | None = None,
        info: AgentInfo | JSONDict | None = None,
        events: Sequence[Timeline | JSONDict] = (),
        messages_from: int = 0,
        tool_call_records_from: int = 0,
    ) -> None:
        """Everything one turn changed in one call: the events, then one transaction for messages,
        tool calls and info. Equivalent to the separate calls, in less time.

        ``messages_from=n``: ``messages`` is the history from position ``n`` on; the first ``n``
        stored messages stay as they are (likewise ``tool_call_records_from``). A runtime that
        passes only what the turn appended (``history[n:]``) makes a call whose cost does not grow
        with the conversation; a retried call rewrites the same positions, so it changes no message
        or record (its events, though, are appended again).

        Events go first, as a runtime appends them before it saves its info: if the process dies in
        between, the log holds events the info does not point at yet, never a bookmark past the log."""
        message_models = None if messages is None else coerce_all(Message, messages, "messages")
        record_models = (
            None if tool_call_records is None else coerce_all(ToolCallRecord, tool_call_records, "records")
        )
        check_start(messages_from, messages, "messages_from", "messages")
        check_start(tool_call_records_from, tool_call_records, "tool_call_records_from", "tool_call_records")
        info_model = None if info is None else self._checked_info(agent_id, info)
        timelines = coerce_all(Timeline, events, "events")
        for timeline in timelines:
            check_timeline(timeline)
        lines = [timeline.to_dict() for timeline in timelines]

        async def append_events() -> None:
            await self._files.append_events(agent_id, *lines)

        created = await self._records.save_turn(
            agent_id,
            None if message_models is None else (message_models, messages_from),
            None if record_models is None else (record_models, tool_call_records_from),
            info_model,
            now_ms(),
            before=append_events if lines else None,
        )
        if info_model is not None:
            await self._files.revive(agent_id, recreated=created)

    @operation("saves")
    async def save_todos(self, agent_id: str, snapshot: TodoSnapshot | JSONDict) -> None:
        await self._files.save_todos(agent_id, coerce(TodoSnapshot, snapshot, "snapshot").to_dict())

    @operation("loads")
    async def load_todos(self, agent_id: str) -> TodoSnapshot | None:
        data = await self._files.load_todos(agent_id)
        return None if data is None else TodoSnapshot.from_dict(data)

    # ---- events ----------------------------------------------------------------------------------

    @operation("saves")
    async def append_event(self, agent_id: str, timeline: Timeline | JSONDict) -> None:
        """Returns once the event is written to the OS (``durability="fsync"``: on disk)."""
        model = coerce(Timeline, timeline, "timeline")
        check_timeline(model)
        await self._files.append_events(agent_id, model.to_dict())

    def read_events(
        self,
        agent_id: str,
        since: Bookmark | JSONDict | int | None = None,
        channel: str | None = None,
    ) -> AsyncGenerator[Timeline, None]:
        """Events in append order; ``since`` keeps only ``seq > since.seq``; streams any log length.

        Arguments are checked here, when called, not when iteration starts. A caller that stops early
        should close the iterator (``contextlib.aclosing``): that closes the log file at once."""
        self._ensure_open()
        validate_agent_id(agent_id)
        since_seq: int | None
        if since is None or isinstance(since, (Bookmark, dict)):
            since_seq = None if since is None else coerce(Bookmark, since, "since").seq
        elif isinstance(since, int) and not isinstance(since, bool):
            since_seq = since
        else:
            raise ValueError(f"since must be a Bookmark, a dict or an int seq, got {type(since).__name__}")
        if channel is not None:
            check_choice(channel, "channel", EVENT_CHANNELS)
        return self._stream_events(agent_id, since_seq, channel)

    async def _stream_events(
        self, agent_id: str, since_seq: int | None, channel: str | None
    ) -> AsyncGenerator[Timeline, None]:
        started = time.perf_counter()
        try:
            async with aclosing(self._files.read_events(agent_id, since_seq, channel)) as events:
                async for data in events:
                    yield Timeline.from_dict(data)
        finally:
            self.metrics.record("loads", (time.perf_counter() - started) * 1000)

    # ---- history and media -----------------------------------------------------------------------

    async def _append_history(self, agent_id: str, kind: HistoryKind, record: _Model) -> None:
        await self._files.append_history(agent_id, kind, record.to_dict())

    @operation("saves")
    async def save_history_window(self, agent_id: str, window: HistoryWindow | JSONDict) -> None:
        await self._append_history(agent_id, "windows", coerce(HistoryWindow, window, "window"))

    @operation("loads")
    async def load_history_windows(self, agent_id: str) -> builtins.list[HistoryWindow]:
        return [HistoryWindow.from_dict(d) for d in await self._files.load_history(agent_id, "windows")]

    @operation("saves")
    async def save_compression_record(self, agent_id: str, record: CompressionRecord | JSONDict) -> None:
        await self._append_history(agent_id, "compressions", coerce(CompressionRecord, record, "record"))

    @operation("loads")
    async def load_compression_records(self, agent_id: str) -> builtins.list[CompressionRecord]:
        return [
            CompressionRecord.from_dict(d) for d in await self._files.load_history(agent_id, "compressions")
        ]

    @operation("saves")
    async def save_recovered_file(self, agent_id: str, file: RecoveredFile | JSONDict) -> None:
        await self._append_history(agent_id, "recovered", coerce(RecoveredFile, file, "file"))

    @operation("loads")
    async def load_recovered_files(self, agent_id: str) -> builtins.list[RecoveredFile]:
        return [RecoveredFile.from_dict(d) for d in await self._files.load_history(agent_id, "recovered")]

    @operation("saves")
    async def save_media_cache(self, agent_id: str, records: Sequence[MediaCacheRecord | JSONDict]) -> None:
        models = coerce_all(MediaCacheRecord, records, "records")
        await self._files.save_media_cache(agent_id, [m.to_dict() for m in models])

    @operation("loads")
    async def load_media_cache(self, agent_id: str) -> builtins.list[MediaCacheRecord]:
        return [MediaCacheRecord.from_dict(d) for d in await self._files.load_media_cache(agent_id)]

    # ---- snapshots -------------------------------------------------------------------------------

    @operation("saves")
    async def save_snapshot(self, agent_id: str, snapshot: Snapshot | JSONDict) -> None:
        """Insert or replace the snapshot with this id."""
        await self._records.save_snapshot(agent_id, coerce(Snapshot, snapshot, "snapshot"), now_ms())

    @operation("loads")
    async def load_snapshot(self, agent_id: str, snapshot_id: str) -> Snapshot | None:
        if not isinstance(snapshot_id, str):
            raise ValueError("snapshot_id must be a string")
        data = await self._records.load_snapshot(agent_id, snapshot_id)
        return None if data is None else Snapshot.from_dict(data)

    @operation("loads")
    async def list_snapshots(self, agent_id: str) -> builtins.list[Snapshot]:
        return [Snapshot.from_dict(d) for d in await self._records.list_snapshots(agent_id)]

    # ---- whole agents (backup, restore, migrate) -------------------------------------------------

    @property
    def consistent_export(self) -> bool:
        """True when ``export_agents`` reads all the agents it is given as of one moment."""
        return self._records.consistent_export

    @property
    def keeps_side_rows(self) -> bool:
        """True when the store holds suspended states, feedback and checkpoints (not ``JSONStore``)."""
        return self._records.keeps_side_rows

    @operation("loads")
    async def export_agents(self, agent_ids: Sequence[str]) -> dict[str, AgentRecords]:
        """Info, messages, tool calls and snapshots of each agent that has info, with the timestamps
        queries use (each message's first save, the agent's last update), in the order given.

        On SQL stores the whole batch is one read transaction, one moment of all of its agents: an
        agent whose runtime keeps saving is never read half before and half after a save. The
        file-only ``JSONStore`` reads agent by agent (``consistent_export`` is False)."""
        if isinstance(agent_ids, (str, bytes)) or not isinstance(agent_ids, Sequence):
            raise ValueError("agent_ids must be a list of agent ids")
        for agent_id in agent_ids:
            validate_agent_id(agent_id)
        return await self._records.export_agents(agent_ids)

    @operation("saves")
    async def import_agent(self, agent_id: str, records: AgentRecords) -> None:
        """Make the agent's database half exactly ``records`` (as ``export_agents`` returns them),
        timestamps included, in one transaction on SQL stores; running it again changes nothing.

        Restore and migrate copy agents with this, so a copy keeps each message's ``created_at``
        and the agent's ``updated_at`` (which ``prune`` goes by). Importing is a deliberate
        re-creation: a deletion's tombstone is cleared first. Side rows (suspended states, feedback,
        LangGraph checkpoints) come along; events, todos, history and media are not part of it."""
        if not isinstance(records, AgentRecords):
            raise ValueError(f"records must be AgentRecords, got {type(records).__name__}")
        checked = AgentRecords(
            self._checked_info(agent_id, records.info),
            coerce_all(Message, records.messages, "records.messages"),
            coerce_all(ToolCallRecord, records.tool_calls, "records.tool_calls"),
            coerce_all(Snapshot, records.snapshots, "records.snapshots"),
            records.message_created_at,
            records.updated_at_ms,
            records.side_rows,  # checked by the record backend, which knows its side tables
        )
        checked.check()
        await self._files.revive(agent_id)  # the records' tombstone goes in the import's transaction
        await self._records.import_agent(checked, now_ms())

    # ---- metadata and lifecycle ------------------------------------------------------------------

    @staticmethod
    def _checked_info(agent_id: str, info: AgentInfo | JSONDict) -> AgentInfo:
        model = coerce(AgentInfo, info, "info")
        if model.agent_id != agent_id:
            raise ValueError(f"info.agent_id {model.agent_id!r} differs from agent_id {agent_id!r}")
        return model

    @operation("saves")
    async def save_info(self, agent_id: str, info: AgentInfo | JSONDict) -> None:
        """Insert or replace the agent's info; never touches its messages, tool calls or snapshots.

        After ``delete``, an info created before the deletion raises ``AgentDeleted`` (a late write
        from a process that still held the agent); a newer one re-creates the agent."""
        created = await self._records.save_info(self._checked_info(agent_id, info), now_ms())
        await self._files.revive(agent_id, recreated=created)

    @operation("loads")
    async def load_info(self, agent_id: str) -> AgentInfo | None:
        data = await self._records.load_info(agent_id)
        return None if data is None else AgentInfo.from_dict(data)

    @operation("loads")
    async def exists(self, agent_id: str) -> bool:
        return await self._records.exists(agent_id)

    @operation("deletes")
    async def delete(self, agent_id: str) -> None:
        """Remove everything of the agent, database and files; deleting twice is fine.

        The deletion sticks: it leaves a tombstone, so a process that still held the agent cannot
        bring back a half agent with a late append or save (those raise ``AgentDeleted``)."""
        deleted_at = now_ms()
        await self._records.delete(agent_id, deleted_at)
        await self._files.delete_agent(agent_id, deleted_at)

    @operation("deletes")
    async def clear_tombstone(self, agent_id: str) -> None:
        """Forget that the agent was deleted, so data of any age may re-create it (restore, migrate)."""
        await self._records.clear_tombstone(agent_id)
        await self._files.revive(agent_id)

    @operation("saves")
    async def refresh_statistics(self) -> None:
        """Refresh the database's statistics of the store's tables (Postgres ``ANALYZE``), so that
        queries get their good plans right after a bulk load, also where autovacuum is off or has not
        run yet. ``ops.restore`` and ``ops.migrate`` call it when they are done; nothing to do on
        SQLite and the file stores."""
        await self._records.refresh_statistics()

    @operation("loads")
    async def list(self, prefix: str | None = None) -> builtins.list[str]:
        """Ids of agents that have info, sorted; only those starting with ``prefix`` when given."""
        if prefix is not None and not isinstance(prefix, str):
            raise ValueError("prefix must be a string")
        return await self._records.list_agents(prefix)
