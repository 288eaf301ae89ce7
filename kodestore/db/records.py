"""Agent info, messages, tool calls and snapshots in SQL: the logic, written once for every dialect.

Saves are diffs. Each agent row carries a random version token per collection, changed by every save;
a writer keeps the row hashes it last wrote under that token, so a new turn writes only the new or
changed rows and never rewrites the history. The diff is computed before the transaction, against
those hashes, and applied only if the tokens still match: the statement that updates the agent's row
(its info, counts and new tokens) carries the old tokens in its ``WHERE``, so a turn is that one
statement plus the inserts, as few as a hand-written save. When another process saved in between,
the tokens differ, nothing is updated, and the same transaction reads the stored hashes and diffs
again.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, TypeVar

from kodestore.backend import AgentRecords, RecordBackend, Slice
from kodestore.db.base import Batch, Plan, SqlDriver, Stmt
from kodestore.db.queries import (
    MessageQuery,
    SessionQuery,
    ToolCallQuery,
    message_from_row,
    messages_stmt,
    session_from_row,
    sessions_stmt,
    stats_from_row,
    stats_stmt,
    tool_call_from_row,
    tool_calls_stmt,
)
from kodestore.db.rows import (
    AppendedRows,
    InfoRow,
    MessageRow,
    ToolCallRow,
    info_row,
    message_from_columns,
    message_rows,
    snapshot_body,
    tool_call_rows,
)
from kodestore.db.side_tables import SIDE_TABLES, check_side_rows, side_row
from kodestore.errors import AgentDeleted, AgentNotFound
from kodestore.jsonutil import loads
from kodestore.models import (
    AgentInfo,
    AgentStats,
    JSONDict,
    Message,
    MessageRecord,
    SessionInfo,
    Snapshot,
    ToolCallRecord,
)
from kodestore.validation import ms_to_iso

K = TypeVar("K")
R = TypeVar("R")
V = TypeVar("V")

_CACHE_AGENTS = 2048
LIGHT_ROWS = 64  # a save writing at most this many rows from a known state is light (see SqlDriver.run)


# _Stored, Tail and _Change are not frozen: built on every save (see ``kodestore.db.base``)
@dataclass(slots=True)
class _Stored(Generic[K]):
    """What one collection of one agent holds, as last seen: key -> (hash, created_at).

    ``source``: the rows list saved to reach this state, when a save did; a next list of rows that
    extends that very list (``AppendedRows``) only needs its new rows compared."""

    version: int
    rows: dict[K, tuple[bytes, int]]
    source: Sequence[Any] | None = None


class _PerAgent(Generic[V]):
    """One value per agent, the ``_CACHE_AGENTS`` most recently stored kept."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, V] = OrderedDict()

    def latest(self, agent_id: str) -> V | None:
        return self._entries.get(agent_id)

    def put(self, agent_id: str, value: V) -> None:
        self._entries[agent_id] = value
        self._entries.move_to_end(agent_id)
        while len(self._entries) > _CACHE_AGENTS:
            self._entries.popitem(last=False)

    def forget(self, agent_id: str) -> None:
        self._entries.pop(agent_id, None)


class _VersionedCache(_PerAgent[_Stored[K]]):
    """``_Stored`` per agent, trusted only while the agent's version token matches; ``latest`` is
    what this process last saw stored, whatever the stored token is now."""

    def get(self, agent_id: str, version: int) -> dict[K, tuple[bytes, int]] | None:
        entry = self._entries.get(agent_id)
        if entry is None or entry.version != version:
            return None
        self._entries.move_to_end(agent_id)
        return entry.rows


#: version tokens only need to differ between writers: a generator seeded from os.urandom (and again in
#: a forked child) is as good for that as ``secrets``, without a system call per save; it is private, so
#: an application seeding ``random`` cannot make two processes draw the same tokens
_TOKENS = random.Random()
os.register_at_fork(after_in_child=_TOKENS.seed)


def _new_version() -> int:
    return _TOKENS.getrandbits(62) + 1


def _message_params(agent_id: str, row: MessageRow, created_at: int) -> tuple[Any, ...]:
    """The parameters of ``_UPSERT_MESSAGE``."""
    return (agent_id, row.seq, row.role, row.content, row.metadata, row.extra, row.hash, created_at)


def _tool_call_params(agent_id: str, row: ToolCallRow) -> tuple[Any, ...]:
    """The parameters of ``_UPSERT_TOOL_CALL``."""
    return (
        agent_id,
        row.id,
        row.position,
        row.name,
        row.state,
        row.is_error,
        row.approval_required,
        row.created_at,
        row.record,
        row.hash,
    )


_UPSERT_INFO = (
    "INSERT INTO agents (agent_id, template_id, created_at_ms, updated_at_ms, message_count, metadata,"
    " lineage, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (agent_id) DO UPDATE SET template_id = excluded.template_id,"
    " created_at_ms = excluded.created_at_ms, updated_at_ms = excluded.updated_at_ms,"
    " message_count = excluded.message_count, metadata = excluded.metadata,"
    " lineage = excluded.lineage, info = excluded.info"
)
_UPDATE_INFO = (
    "UPDATE agents SET template_id = ?, created_at_ms = ?, updated_at_ms = ?, message_count = ?,"
    " metadata = ?, lineage = ?, info = ? WHERE agent_id = ? RETURNING agent_id"
)
_TOMBSTONE = (
    "INSERT INTO deleted_agents (agent_id, deleted_at_ms) VALUES (?, ?)"
    " ON CONFLICT (agent_id) DO UPDATE SET deleted_at_ms = excluded.deleted_at_ms"
)
_UPSERT_MESSAGE = (
    "INSERT INTO messages (agent_id, seq, role, content, metadata, extra, hash, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id, seq) DO UPDATE SET role = excluded.role,"
    " content = excluded.content, metadata = excluded.metadata, extra = excluded.extra,"
    " hash = excluded.hash, created_at = excluded.created_at"
)
_UPSERT_TOOL_CALL = (
    "INSERT INTO tool_calls (agent_id, id, position, name, state, is_error, approval_required,"
    " created_at, record, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (agent_id, id) DO UPDATE SET position = excluded.position, name = excluded.name,"
    " state = excluded.state, is_error = excluded.is_error,"
    " approval_required = excluded.approval_required, created_at = excluded.created_at,"
    " record = excluded.record, hash = excluded.hash"
)
_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (agent_id, snapshot_id, body) VALUES (?, ?, ?)"
    " ON CONFLICT (agent_id, snapshot_id) DO UPDATE SET body = excluded.body"
)
_IMPORT_INFO = (
    "INSERT INTO agents (agent_id, template_id, created_at_ms, updated_at_ms, message_count,"
    " messages_version, tool_calls_version, metadata, lineage, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (agent_id) DO UPDATE SET template_id = excluded.template_id,"
    " created_at_ms = excluded.created_at_ms, updated_at_ms = excluded.updated_at_ms,"
    " message_count = excluded.message_count, messages_version = excluded.messages_version,"
    " tool_calls_version = excluded.tool_calls_version, metadata = excluded.metadata,"
    " lineage = excluded.lineage, info = excluded.info"
)
_EXPORT_CHUNK = 500  # ids per IN list: below SQLite's oldest limit of 999 parameters


@dataclass(frozen=True, slots=True)
class _ImportRows:
    """One agent's records as rows, computed before the transaction starts."""

    info: InfoRow
    messages: list[MessageRow]
    message_created_at: list[int] | None
    tool_calls: list[ToolCallRow]
    snapshots: list[tuple[str, str]]  # (snapshot id, body)
    updated_at_ms: int | None
    side_rows: dict[str, list[tuple[Any, ...]]]


@dataclass(slots=True)
class Tail(Generic[R]):
    """Rows of a list from position ``start`` on (``rows[i]`` is at ``start + i``); the stored rows
    before ``start`` stay. ``whole``: every row of the list, when the caller gave all of it;
    ``extends``: the rows of the previous save that the list begins with (``AppendedRows``)."""

    rows: Sequence[R]
    start: int = 0
    whole: Sequence[R] | None = None
    extends: Sequence[R] | None = None

    @property
    def end(self) -> int:
        """The list's length: where the stored rows end after the save."""
        return self.start + len(self.rows)

    def after(self, known: _Stored[Any]) -> Tail[R]:
        """Only the rows past ``known``'s, when the list extends the very rows that led to it."""
        count = len(known.rows)
        if self.extends is None or known.source is not self.extends or len(self.rows) < count:
            return self
        return Tail(self.rows[count:], count, self.whole)


@dataclass(slots=True)
class _Change(Generic[K]):
    """One collection's diff against the state stored under token ``expected``."""

    expected: int
    version: int  # the token this save sets
    writes: list[Stmt]
    rows: dict[K, tuple[bytes, int]]  # the state after the writes, for the cache
    tail: Tail[Any]  # what was saved

    @property
    def cached(self) -> _Stored[K]:
        """What the cache holds once the change is committed."""
        return _Stored(self.version, self.rows, self.tail.whole)


#: columns of the agent's row that a save rarely changes: when one holds the value this process last
#: wrote and the save writes that value again, the guarded update checks it instead of setting it,
#: which spares its index entries (SQLite updates only the indexes of the columns it sets)
_SAME_UNLESS_CHANGED = ("template_id", "created_at_ms", "message_count", "metadata", "lineage")


@lru_cache(maxsize=256)
def _guarded_update_sql(columns: tuple[str, ...], guards: tuple[str, ...], is_same: str) -> str:
    assignments = ", ".join(f"{column} = ?" for column in columns)
    conditions = "".join(f" AND {guard} {is_same} ?" for guard in guards)
    return f"UPDATE agents SET {assignments} WHERE agent_id = ?{conditions} RETURNING agent_id"


def _info_columns(info: InfoRow) -> dict[str, Any]:
    """The agent row's columns an info save sets, by name."""
    return {
        "template_id": info.template_id,
        "created_at_ms": info.created_at_ms,
        "message_count": info.message_count,
        "metadata": info.metadata,
        "lineage": info.lineage,
        "info": info.info,
    }


def _guarded_update(
    agent_id: str,
    now_ms: int,
    info: InfoRow | None,
    messages: _Change[int] | None,
    tool_calls: _Change[str] | None,
    last_written: dict[str, Any],
    is_same: str,
) -> tuple[Stmt, dict[str, Any]]:
    """One ``UPDATE`` of the agent's row: its info, message count and new version tokens, only
    where the tokens are still those the changes were diffed against; it returns no row otherwise
    (or when the agent has no row). A column that would be set to the value this process last
    wrote there (``last_written``) is checked instead: if another writer changed it, the update
    matches nothing either. Also returns the ``_SAME_UNLESS_CHANGED`` values the row then holds."""
    columns: dict[str, Any] = {}
    guards: dict[str, Any] = {}
    if info is not None:
        columns.update(_info_columns(info))
    if messages is not None:
        columns["message_count"] = messages.tail.end
        columns["messages_version"] = messages.version
        guards["messages_version"] = messages.expected
    if tool_calls is not None:
        columns["tool_calls_version"] = tool_calls.version
        guards["tool_calls_version"] = tool_calls.expected
    written = {column: columns[column] for column in _SAME_UNLESS_CHANGED if column in columns}
    for column, value in written.items():
        if column in last_written and last_written[column] == value:
            guards[column] = columns.pop(column)
    columns["updated_at_ms"] = now_ms
    stmt = Stmt(
        _guarded_update_sql(tuple(columns), tuple(guards), is_same),
        (*columns.values(), agent_id, *guards.values()),
        "one",
    )
    return stmt, {**last_written, **written}


def save_info_plan(row: InfoRow, now_ms: int) -> Plan[bool]:
    """Update the agent's row; only when there is none, check the tombstone, then insert (and
    return ``True``: the agent was created).

    The common case (an agent saving its info every turn) is one statement; the tombstone is read
    only on the path that could bring a deleted agent back."""
    columns = (
        row.template_id,
        row.created_at_ms,
        now_ms,
        row.message_count,
        row.metadata,
        row.lineage,
        row.info,
    )
    if (yield Stmt(_UPDATE_INFO, (*columns, row.agent_id), "one")) is not None:
        return False
    tombstone = yield Stmt(
        "SELECT deleted_at_ms FROM deleted_agents WHERE agent_id = ?", (row.agent_id,), "one"
    )
    if tombstone is not None and row.created_at_ms < int(tombstone[0]):
        raise AgentDeleted(
            f"agent {row.agent_id!r} was deleted at {ms_to_iso(int(tombstone[0]))}; an info created"
            f" before that ({ms_to_iso(row.created_at_ms)}) is a late write and was refused"
        )
    yield Stmt(_UPSERT_INFO, (row.agent_id, *columns))
    return True


def _moved_messages(stored: dict[int, tuple[bytes, int]], tail: Tail[MessageRow]) -> dict[bytes, list[int]]:
    """First-save times of stored messages from ``tail.start`` on that left their position, by
    content hash, oldest first.

    A message that moved (the history was compacted or edited before it) keeps its first-save time;
    each stored message lends its time once, and one still in place lends none, so a new message
    that repeats an earlier one is new."""
    moved: dict[bytes, list[int]] = {}
    rows, start = tail.rows, tail.start
    for seq in sorted(seq for seq in stored if seq >= start):
        digest, created = stored[seq]
        if seq - start >= len(rows) or rows[seq - start].hash != digest:
            moved.setdefault(digest, []).append(created)
    return moved


def _message_writes(
    agent_id: str, stored: dict[int, tuple[bytes, int]], tail: Tail[MessageRow], now_ms: int
) -> tuple[list[Stmt], dict[int, tuple[bytes, int]]]:
    """The statements that make the stored history ``stored[:start] + tail``, and the state after.

    A tail that starts after everything stored (a history that only grew) is all new: nothing is
    compared, nothing moved, and the stored state is copied at C speed."""
    appended = tail.start >= len(stored)
    moved: dict[bytes, list[int]] | None = {} if appended else None
    new_rows = dict(stored) if appended else {s: v for s, v in stored.items() if s < tail.start}
    upserts = []
    for row in tail.rows:
        old = stored.get(row.seq)
        if old is not None and old[0] == row.hash:
            new_rows[row.seq] = old
            continue
        if moved is None:
            moved = _moved_messages(stored, tail)
        same = moved.get(row.hash)
        created = same.pop(0) if same else now_ms
        new_rows[row.seq] = (row.hash, created)
        upserts.append(_message_params(agent_id, row, created))
    writes = [Stmt(_UPSERT_MESSAGE, upserts, many=True)] if upserts else []
    if len(stored) > tail.end:
        writes.append(Stmt("DELETE FROM messages WHERE agent_id = ? AND seq >= ?", (agent_id, tail.end)))
    return writes, new_rows


def _tool_call_writes(
    agent_id: str, stored: dict[str, tuple[bytes, int]], tail: Tail[ToolCallRow]
) -> tuple[list[Stmt], dict[str, tuple[bytes, int]]]:
    """The statements that make the stored records those at positions below ``tail.start``, then
    ``tail``; and the state after them (id -> (hash, position))."""
    appended = tail.start >= len(stored)
    kept = dict(stored) if appended else {i: v for i, v in stored.items() if v[1] < tail.start}
    new_rows = dict(kept)
    _check_kept_ids(kept, tail)
    upserts = []
    for row in tail.rows:
        new_rows[row.id] = (row.hash, row.position)
        old = stored.get(row.id)
        if old is None or old[0] != row.hash:
            upserts.append(_tool_call_params(agent_id, row))
    writes = []
    removed = [] if appended else [(agent_id, key) for key in stored if key not in new_rows]
    if removed:
        writes.append(Stmt("DELETE FROM tool_calls WHERE agent_id = ? AND id = ?", removed, many=True))
    if upserts:
        writes.append(Stmt(_UPSERT_TOOL_CALL, upserts, many=True))
    return writes, new_rows


def _check_kept_ids(kept: dict[str, tuple[bytes, int]], tail: Tail[ToolCallRow]) -> None:
    """No record of ``tail`` may reuse the id of one kept before it (id -> (hash, position))."""
    for row in tail.rows:
        if row.id in kept:
            raise ValueError(
                f"records[{row.position - tail.start}]: tool call id {row.id!r} is already stored at"
                f" position {kept[row.id][1]}"
            )


def _check_start(tail: Tail[Any], stored: int, what: str) -> None:
    if tail.start > stored:
        raise ValueError(
            f"{what} start at position {tail.start}, but {stored} are stored: the ones in between are missing"
        )


class _Stale(Exception):
    """The guarded update found other version tokens: the diff is void, its transaction undone."""


def _rows_written(writes: list[Stmt]) -> int:
    return sum(len(stmt.params) if stmt.many else 1 for stmt in writes)


class SqlRecords(RecordBackend):
    """The database half of a store, over any ``SqlDriver``."""

    def __init__(self, driver: SqlDriver) -> None:
        self.driver = driver
        self._for_update = driver.dialect.for_update
        self._messages: _VersionedCache[int] = _VersionedCache()
        self._tool_calls: _VersionedCache[str] = _VersionedCache()
        # the ``_SAME_UNLESS_CHANGED`` values this process last wrote to each agent's row
        self._last_written: _PerAgent[dict[str, Any]] = _PerAgent()
        self._message_rows = AppendedRows(Message, message_rows)
        self._tool_call_rows = AppendedRows(ToolCallRecord, tool_call_rows)

    async def open(self) -> None:
        await self.driver.open()

    async def refresh_statistics(self) -> None:
        stmt = self.driver.dialect.refresh_statistics()
        if stmt is not None:
            await self.driver.fetch(stmt, write=True)

    async def close(self) -> None:
        await self.driver.close()

    # ---- info ------------------------------------------------------------------------------------

    async def save_info(self, info: AgentInfo, now_ms: int) -> bool:
        return await self._save(info.agent_id, now_ms, info=info_row(info))

    async def load_info(self, agent_id: str) -> JSONDict | None:
        stmt = Stmt("SELECT info, message_count FROM agents WHERE agent_id = ?", (agent_id,), "one")
        row = await self.driver.fetch(stmt)
        if row is None:
            return None
        info: JSONDict = loads(row[0])
        info["messageCount"] = int(row[1])
        return info

    # ---- messages --------------------------------------------------------------------------------

    def _lock_agent(self, agent_id: str, column: str) -> Plan[int]:
        row = yield Stmt(
            f"SELECT {column} FROM agents WHERE agent_id = ?{self._for_update}", (agent_id,), "one"
        )
        if row is None:
            raise AgentNotFound(f"agent {agent_id!r} has no info; save_info first")
        return int(row[0])

    def _stored_messages(self, agent_id: str) -> Plan[dict[int, tuple[bytes, int]]]:
        version = yield from self._lock_agent(agent_id, "messages_version")
        stored = self._messages.get(agent_id, version)
        if stored is None:
            found = yield Stmt(
                "SELECT seq, hash, created_at FROM messages WHERE agent_id = ?", (agent_id,), "all"
            )
            stored = {int(seq): (bytes(h), int(created)) for seq, h, created in found}
        return stored

    def replace_messages_plan(self, agent_id: str, tail: Tail[MessageRow], now_ms: int) -> Plan[None]:
        """Diff against what is stored now (the row locked, its hashes read unless cached)."""
        stored = yield from self._stored_messages(agent_id)
        _check_start(tail, len(stored), "messages")
        writes, new_rows = _message_writes(agent_id, stored, tail, now_ms)
        yield from writes
        new_version = _new_version()
        yield Stmt(
            "UPDATE agents SET message_count = ?, messages_version = ?, updated_at_ms = ? WHERE agent_id = ?",
            (tail.end, new_version, now_ms, agent_id),
        )
        self._messages.put(agent_id, _Stored(new_version, new_rows, tail.whole))

    def _message_change(self, agent_id: str, tail: Tail[MessageRow], now_ms: int) -> _Change[int] | None:
        known = self._messages.latest(agent_id)
        if known is None or tail.start > len(known.rows):
            return None  # nothing known, or another process stored more since: ask the database
        tail = tail.after(known)
        writes, new_rows = _message_writes(agent_id, known.rows, tail, now_ms)
        return _Change(known.version, _new_version(), writes, new_rows, tail)

    async def save_messages(self, agent_id: str, messages: Sequence[Message], now_ms: int) -> None:
        await self._save(agent_id, now_ms, messages=self._message_tail(agent_id, messages, 0))

    def _message_tail(self, agent_id: str, messages: Sequence[Message], start: int) -> Tail[MessageRow]:
        if start:
            return Tail(message_rows(messages, base=start), start)
        rows, extends = self._message_rows.rows(agent_id, messages)
        return Tail(rows, 0, rows, extends)

    async def load_messages(self, agent_id: str) -> list[JSONDict]:
        stmt = Stmt(
            "SELECT role, content, metadata, extra FROM messages WHERE agent_id = ? ORDER BY seq",
            (agent_id,),
            "all",
        )
        return [message_from_columns(*row) for row in await self.driver.fetch(stmt)]

    # ---- tool calls ------------------------------------------------------------------------------

    def replace_tool_calls_plan(self, agent_id: str, tail: Tail[ToolCallRow], now_ms: int) -> Plan[None]:
        """Diff against what is stored now (the row locked, its hashes read unless cached)."""
        version = yield from self._lock_agent(agent_id, "tool_calls_version")
        stored = self._tool_calls.get(agent_id, version)
        if stored is None:
            found = yield Stmt(
                "SELECT id, hash, position FROM tool_calls WHERE agent_id = ?", (agent_id,), "all"
            )
            stored = {str(i): (bytes(h), int(position)) for i, h, position in found}
        _check_start(tail, len(stored), "records")
        writes, new_rows = _tool_call_writes(agent_id, stored, tail)
        yield from writes
        new_version = _new_version()
        yield Stmt(
            "UPDATE agents SET tool_calls_version = ?, updated_at_ms = ? WHERE agent_id = ?",
            (new_version, now_ms, agent_id),
        )
        self._tool_calls.put(agent_id, _Stored(new_version, new_rows, tail.whole))

    def _tool_call_change(self, agent_id: str, tail: Tail[ToolCallRow]) -> _Change[str] | None:
        known = self._tool_calls.latest(agent_id)
        if known is None or tail.start > len(known.rows):
            return None
        tail = tail.after(known)
        writes, new_rows = _tool_call_writes(agent_id, known.rows, tail)
        return _Change(known.version, _new_version(), writes, new_rows, tail)

    async def save_tool_calls(self, agent_id: str, records: Sequence[ToolCallRecord], now_ms: int) -> None:
        await self._save(agent_id, now_ms, tool_calls=self._tool_call_tail(agent_id, records, 0))

    def _tool_call_tail(
        self, agent_id: str, records: Sequence[ToolCallRecord], start: int
    ) -> Tail[ToolCallRow]:
        if start:
            return Tail(tool_call_rows(records, base=start), start)
        rows, extends = self._tool_call_rows.rows(agent_id, records)
        return Tail(rows, 0, rows, extends)

    async def load_tool_calls(self, agent_id: str) -> list[JSONDict]:
        stmt = Stmt("SELECT record FROM tool_calls WHERE agent_id = ? ORDER BY position", (agent_id,), "all")
        return [loads(row[0]) for row in await self.driver.fetch(stmt)]

    # ---- one turn in one transaction -------------------------------------------------------------

    async def save_turn(
        self,
        agent_id: str,
        messages: Slice[Message] | None,
        tool_calls: Slice[ToolCallRecord] | None,
        info: AgentInfo | None,
        now_ms: int,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Messages, tool calls and info of one turn, committed together; ``before`` runs once the
        turn is validated and diffed, right before its transaction."""
        return await self._save(
            agent_id,
            now_ms,
            info=None if info is None else info_row(info),
            messages=None if messages is None else self._message_tail(agent_id, *messages),
            tool_calls=None if tool_calls is None else self._tool_call_tail(agent_id, *tool_calls),
            before=before,
        )

    async def _save(
        self,
        agent_id: str,
        now_ms: int,
        *,
        info: InfoRow | None = None,
        messages: Tail[MessageRow] | None = None,
        tool_calls: Tail[ToolCallRow] | None = None,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Every save: diffed against the cached state first, then applied by one guarded update
        of the agent's row and the writes; diffed again, in the same transaction, if that finds the
        stored state changed (or nothing was cached). ``True`` when it created the agent's row."""
        message_change = None if messages is None else self._message_change(agent_id, messages, now_ms)
        tool_call_change = None if tool_calls is None else self._tool_call_change(agent_id, tool_calls)
        changes = [change for change in (message_change, tool_call_change) if change is not None]
        known = (messages is None) == (message_change is None) and (tool_calls is None) == (
            tool_call_change is None
        )
        if before is not None:
            if not known:
                await self._check_starts(agent_id, messages, tool_calls)
            await before()

        def diffed() -> Plan[bool]:
            """The guarded update and the writes, sent together; rolled back if the guard failed."""
            update, row_values = _guarded_update(
                agent_id,
                now_ms,
                info,
                message_change,
                tool_call_change,
                self._last_written.latest(agent_id) or {},
                self.driver.dialect.is_same,
            )
            writes = (stmt for change in changes for stmt in change.writes)
            results = yield Batch((update, *writes), guarded=True)
            if results[0] is None:
                raise _Stale
            self._last_written.put(agent_id, row_values)
            if message_change is not None:
                self._messages.put(agent_id, message_change.cached)
            if tool_call_change is not None:
                self._tool_calls.put(agent_id, tool_call_change.cached)
            return False  # the guarded update changed an existing row

        def diffed_again() -> Plan[bool]:
            created = False
            if info is not None:
                created = yield from save_info_plan(info, now_ms)
                if created:
                    self._know_new_agent(agent_id, info, set_count=messages is None)
            if messages is not None:
                yield from self.replace_messages_plan(agent_id, messages, now_ms)
            if tool_calls is not None:
                yield from self.replace_tool_calls_plan(agent_id, tool_calls, now_ms)
            return created

        try:
            if known:
                light = sum(_rows_written(change.writes) for change in changes) <= LIGHT_ROWS
                try:
                    return await self.driver.run(diffed, write=True, light=light)
                except _Stale:
                    pass  # another process saved since: diff against what it stored
            self._last_written.forget(agent_id)  # the row's values are the database's again
            return await self.driver.run(diffed_again, write=True)
        except BaseException:
            self._messages.forget(agent_id)
            self._tool_calls.forget(agent_id)
            self._last_written.forget(agent_id)
            raise

    def _know_new_agent(self, agent_id: str, info: InfoRow, set_count: bool) -> None:
        """What a row this transaction inserted holds: no messages and no tool calls, under the
        default version tokens (0; every save draws a non-zero one), and the info's columns; so the
        agent's next save is diffed and guarded like any other, one round trip. Were another writer
        to have stored something meanwhile, its tokens would differ and the guard would say so."""
        self._messages.put(agent_id, _Stored(0, {}))
        self._tool_calls.put(agent_id, _Stored(0, {}))
        columns = _info_columns(info)
        if not set_count:
            del columns["message_count"]  # the messages saved in the same transaction set it
        self._last_written.put(agent_id, {c: columns[c] for c in _SAME_UNLESS_CHANGED if c in columns})

    async def _check_starts(
        self, agent_id: str, messages: Tail[MessageRow] | None, tool_calls: Tail[ToolCallRow] | None
    ) -> None:
        """With nothing cached, refuse a slice that does not fit what is stored before anything of
        the turn is written (the transaction checks again, against concurrent writers)."""
        if messages is not None and messages.start:
            count = "SELECT COUNT(*) FROM messages WHERE agent_id = ?"
            _check_start(
                messages, int((await self.driver.fetch(Stmt(count, (agent_id,), "one")))[0]), "messages"
            )
        if tool_calls is not None and tool_calls.start:
            found = await self.driver.fetch(
                Stmt("SELECT id, position FROM tool_calls WHERE agent_id = ?", (agent_id,), "all")
            )
            _check_start(tool_calls, len(found), "records")
            kept = {str(i): (b"", int(position)) for i, position in found if position < tool_calls.start}
            _check_kept_ids(kept, tool_calls)

    # ---- snapshots -------------------------------------------------------------------------------

    async def save_snapshot(self, agent_id: str, snapshot: Snapshot, now_ms: int) -> None:
        body = snapshot_body(snapshot)

        def plan() -> Plan[None]:
            yield from self._lock_agent(agent_id, "updated_at_ms")
            yield Stmt(_UPSERT_SNAPSHOT, (agent_id, snapshot.id, body))
            yield Stmt("UPDATE agents SET updated_at_ms = ? WHERE agent_id = ?", (now_ms, agent_id))

        await self.driver.run(plan, write=True)

    async def load_snapshot(self, agent_id: str, snapshot_id: str) -> JSONDict | None:
        stmt = Stmt(
            "SELECT body FROM snapshots WHERE agent_id = ? AND snapshot_id = ?",
            (agent_id, snapshot_id),
            "one",
        )
        row = await self.driver.fetch(stmt)
        return None if row is None else loads(row[0])

    async def list_snapshots(self, agent_id: str) -> list[JSONDict]:
        stmt = Stmt("SELECT body FROM snapshots WHERE agent_id = ? ORDER BY row_id", (agent_id,), "all")
        return [loads(row[0]) for row in await self.driver.fetch(stmt)]

    # ---- export and import of whole agents -------------------------------------------------------

    consistent_export = True
    keeps_side_rows = True  # export_agents and import_agent carry AgentRecords.side_rows

    def export_plan(self, agent_ids: Sequence[str]) -> Plan[list[list[Any]]]:
        """Agents, messages, tool calls, snapshots and each side table (``SIDE_TABLES``) of
        ``agent_ids``: one query per table per chunk of ids, all in the plan's one transaction, so
        every row comes from the same snapshot."""
        snapshot_read = self.driver.dialect.snapshot_read
        if snapshot_read:
            yield Stmt(snapshot_read)
        found: list[list[Any]] = [[] for _ in range(4 + len(SIDE_TABLES))]
        for start in range(0, len(agent_ids), _EXPORT_CHUNK):
            chunk = agent_ids[start : start + _EXPORT_CHUNK]
            marks = ", ".join("?" * len(chunk))
            among = f"agent_id IN ({marks})"
            side = [
                f"SELECT {t.owner}, {', '.join(t.columns)} FROM {t.name} WHERE {t.owner} IN ({marks})"
                f" ORDER BY {t.owner}, {', '.join(t.key)}"
                for t in SIDE_TABLES
            ]
            for rows, sql in zip(
                found,
                (
                    f"SELECT agent_id, info, message_count, updated_at_ms FROM agents WHERE {among}",
                    "SELECT agent_id, role, content, metadata, extra, created_at FROM messages"
                    f" WHERE {among} ORDER BY agent_id, seq",
                    f"SELECT agent_id, record FROM tool_calls WHERE {among} ORDER BY agent_id, position",
                    f"SELECT agent_id, body FROM snapshots WHERE {among} ORDER BY row_id",
                    *side,
                ),
                strict=True,
            ):
                rows.extend((yield Stmt(sql, chunk, "all")))
        return found

    async def export_agents(self, agent_ids: Sequence[str]) -> dict[str, AgentRecords]:
        """The whole batch in one read transaction (REPEATABLE READ on Postgres): an agent whose
        runtime saves meanwhile is read either before or after that save, never half of each. The
        side tables come along (``AgentRecords.side_rows``: only the tables the agent has rows in)."""
        ids = list(dict.fromkeys(agent_ids))
        if not ids:
            return {}
        infos, messages, tool_calls, snapshots, *side_tables = await self.driver.run(
            lambda: self.export_plan(ids), write=False
        )
        history: defaultdict[str, list[Message]] = defaultdict(list)
        created: defaultdict[str, list[int]] = defaultdict(list)
        for agent_id, role, content, metadata, extra, created_at in messages:
            history[agent_id].append(Message.from_dict(message_from_columns(role, content, metadata, extra)))
            created[agent_id].append(int(created_at))
        calls: defaultdict[str, list[ToolCallRecord]] = defaultdict(list)
        for agent_id, record in tool_calls:
            calls[agent_id].append(ToolCallRecord.from_dict(loads(record)))
        saved: defaultdict[str, list[Snapshot]] = defaultdict(list)
        for agent_id, body in snapshots:
            saved[agent_id].append(Snapshot.from_dict(loads(body)))
        side: defaultdict[str, dict[str, list[tuple[Any, ...]]]] = defaultdict(dict)
        for table, rows in zip(SIDE_TABLES, side_tables, strict=True):
            for owner, *values in rows:
                side[owner].setdefault(table.name, []).append(side_row(table, values))
        found: dict[str, AgentRecords] = {}
        for agent_id, info_text, message_count, updated_at_ms in infos:
            info: JSONDict = loads(info_text)
            info["messageCount"] = int(message_count)
            found[agent_id] = AgentRecords(
                AgentInfo.from_dict(info),
                history[agent_id],
                calls[agent_id],
                saved[agent_id],
                created[agent_id],
                int(updated_at_ms),
                side[agent_id],
            )
        return {agent_id: found[agent_id] for agent_id in ids if agent_id in found}

    def import_plan(self, rows: _ImportRows, now_ms: int) -> Plan[None]:
        """Replace the agent's rows with ``rows``: its agents row is updated in place (what hangs off
        it elsewhere, feedback or checkpoints, stays), its messages, tool calls and snapshots are
        deleted and inserted, its tombstone removed; so are its rows of the side tables
        (``SIDE_TABLES``: deleted in reverse foreign-key order, inserted in order). Both version
        tokens change, so every writer's cache of this agent's hashes goes stale."""
        agent_id = rows.info.agent_id
        created = rows.message_created_at
        if created is None:  # no first-save times given: a message already stored keeps its own
            found = yield Stmt("SELECT hash, created_at FROM messages WHERE agent_id = ?", (agent_id,), "all")
            first_saved = {bytes(h): int(ms) for h, ms in found}
            created = [first_saved.get(row.hash, now_ms) for row in rows.messages]
        info = rows.info
        messages_version, tool_calls_version = _new_version(), _new_version()
        yield Stmt(
            _IMPORT_INFO,
            (
                agent_id,
                info.template_id,
                info.created_at_ms,
                now_ms if rows.updated_at_ms is None else rows.updated_at_ms,
                info.message_count,
                messages_version,
                tool_calls_version,
                info.metadata,
                info.lineage,
                info.info,
            ),
        )
        for table in ("messages", "tool_calls", "snapshots", "deleted_agents"):
            yield Stmt(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))
        if rows.messages:
            params = [_message_params(agent_id, m, ms) for m, ms in zip(rows.messages, created, strict=True)]
            yield Stmt(_UPSERT_MESSAGE, params, many=True)
        if rows.tool_calls:
            yield Stmt(
                _UPSERT_TOOL_CALL, [_tool_call_params(agent_id, t) for t in rows.tool_calls], many=True
            )
        if rows.snapshots:
            yield Stmt(_UPSERT_SNAPSHOT, [(agent_id, *snapshot) for snapshot in rows.snapshots], many=True)
        for side_table in reversed(SIDE_TABLES):
            yield Stmt(f"DELETE FROM {side_table.name} WHERE {side_table.owner} = ?", (agent_id,))
        for side_table in SIDE_TABLES:
            side = rows.side_rows.get(side_table.name)
            if side:
                yield Stmt(
                    f"INSERT INTO {side_table.name} ({side_table.owner}, {', '.join(side_table.columns)})"
                    f" VALUES ({', '.join('?' * (len(side_table.columns) + 1))})",
                    [(agent_id, *row) for row in side],
                    many=True,
                )
        message_hashes = {m.seq: (m.hash, ms) for m, ms in zip(rows.messages, created, strict=True)}
        self._messages.put(agent_id, _Stored(messages_version, message_hashes))
        tool_call_hashes = {t.id: (t.hash, 0) for t in rows.tool_calls}
        self._tool_calls.put(agent_id, _Stored(tool_calls_version, tool_call_hashes))

    async def import_agent(self, records: AgentRecords, now_ms: int) -> None:
        check_side_rows(records.side_rows)
        rows = _ImportRows(
            info_row(records.info),
            message_rows(records.messages),
            records.message_created_at,
            tool_call_rows(records.tool_calls),
            [(snapshot.id, snapshot_body(snapshot)) for snapshot in records.snapshots],
            records.updated_at_ms,
            records.side_rows,
        )
        try:
            await self.driver.run(lambda: self.import_plan(rows, now_ms), write=True)
        except BaseException:
            self._messages.forget(rows.info.agent_id)
            self._tool_calls.forget(rows.info.agent_id)
            raise

    # ---- lifecycle -------------------------------------------------------------------------------

    async def exists(self, agent_id: str) -> bool:
        stmt = Stmt("SELECT 1 FROM agents WHERE agent_id = ?", (agent_id,), "one")
        return await self.driver.fetch(stmt) is not None

    async def delete(self, agent_id: str, now_ms: int) -> None:
        def plan() -> Plan[None]:
            # children first: correct even where the database does not cascade
            for table in ("messages", "tool_calls", "snapshots", "agents"):
                yield Stmt(f"DELETE FROM {table} WHERE agent_id = ?", (agent_id,))
            yield Stmt(_TOMBSTONE, (agent_id, now_ms))

        self._messages.forget(agent_id)
        self._tool_calls.forget(agent_id)
        self._message_rows.forget(agent_id)
        self._tool_call_rows.forget(agent_id)
        await self.driver.run(plan, write=True)

    async def clear_tombstone(self, agent_id: str) -> None:
        def plan() -> Plan[None]:
            yield Stmt("DELETE FROM deleted_agents WHERE agent_id = ?", (agent_id,))

        await self.driver.run(plan, write=True)

    async def list_agents(self, prefix: str | None) -> list[str]:
        if prefix:
            # a range scan on the primary key; no LIKE, so '%' and '_' in a prefix are literal
            stmt = Stmt(
                f"SELECT agent_id FROM agents WHERE {self.driver.dialect.prefix_range('agent_id')}"
                " ORDER BY agent_id",
                (prefix, prefix + "\U0010ffff"),
                "all",
            )
        else:
            stmt = Stmt("SELECT agent_id FROM agents ORDER BY agent_id", (), "all")
        return [str(row[0]) for row in await self.driver.fetch(stmt)]

    async def descendants(self, agent_id: str) -> list[str]:
        condition = self.driver.dialect.json_array_has("lineage")

        stmt = Stmt(
            f"SELECT agent_id FROM agents WHERE {condition} ORDER BY created_at_ms, agent_id",
            (agent_id,),
            "all",
        )
        return [str(row[0]) for row in await self.driver.fetch(stmt)]

    async def totals(self) -> tuple[int, int, int]:
        """(agents, messages, tool calls) across the store."""

        stmt = Stmt(
            "SELECT (SELECT COUNT(*) FROM agents), (SELECT COUNT(*) FROM messages),"
            " (SELECT COUNT(*) FROM tool_calls)",
            (),
            "one",
        )
        row = await self.driver.fetch(stmt)
        return int(row[0]), int(row[1]), int(row[2])

    async def stored_message_count(self, agent_id: str) -> tuple[int, int] | None:
        """(info's message_count, rows in messages) for the consistency check; None without info."""

        stmt = Stmt(
            "SELECT message_count, (SELECT COUNT(*) FROM messages WHERE agent_id = ?)"
            " FROM agents WHERE agent_id = ?",
            (agent_id, agent_id),
            "one",
        )
        row = await self.driver.fetch(stmt)
        return None if row is None else (int(row[0]), int(row[1]))

    # ---- analyst queries -------------------------------------------------------------------------

    async def query_sessions(self, query: SessionQuery) -> list[SessionInfo]:
        rows = await self.driver.fetch(sessions_stmt(self.driver.dialect, query))
        return [session_from_row(row) for row in rows]

    async def query_messages(self, query: MessageQuery) -> list[MessageRecord]:
        rows = await self.driver.fetch(messages_stmt(self.driver.dialect, query))
        return [message_from_row(row) for row in rows]

    async def query_tool_calls(self, query: ToolCallQuery) -> list[ToolCallRecord]:
        rows = await self.driver.fetch(tool_calls_stmt(self.driver.dialect, query))
        return [tool_call_from_row(row) for row in rows]

    async def aggregate_stats(self, agent_id: str | None) -> AgentStats:
        return stats_from_row(await self.driver.fetch(stats_stmt(self.driver.dialect, agent_id)))
