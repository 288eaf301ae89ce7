"""LangGraph checkpoints in SQL: the plans behind ``KodeCheckpointSaver``, written once for every dialect.

Values arrive here already serialised (the saver owns LangGraph's serializer), so this module stores
``(type, bytes)`` pairs and never imports LangGraph. A checkpoint row holds everything but the
channel values; each value lives once per (thread, namespace, channel, version) in
``langgraph_blobs``, and ``langgraph_checkpoint_channels`` records which version of each channel a
checkpoint holds. A checkpoint that changed one channel therefore writes one blob, loads are a join,
and a blob nothing points at any more is garbage that deletes can find in SQL alone.

A thread is an agent: the first checkpoint of a thread creates its agent row (template
``"langgraph"``) so session queries list it and retention (``store.delete``, ``ops.prune``) removes it
with its checkpoints through ``ON DELETE CASCADE``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kodestore.db.base import Dialect, Plan, Stmt
from kodestore.db.rows import info_row
from kodestore.models import AgentInfo
from kodestore.validation import ms_to_iso

TEMPLATE_ID = "langgraph"
"""Template id of the agents the saver creates for threads."""
EMPTY = "empty"
"""Value type of a channel version that holds no value (LangGraph's own savers use the same marker)."""

Typed = tuple[str, bytes]
"""A serialised value: the serializer's type tag and bytes."""


class CheckpointKey(NamedTuple):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str


@dataclass(frozen=True, slots=True)
class BlobRow:
    """One channel value new in a checkpoint; ``value`` is None for ``value_type == EMPTY``."""

    channel: str
    version: str
    value_type: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A checkpoint to store: its serialised body (no channel values), metadata as JSON text, the
    version of every channel it holds and the blobs of the versions new in it."""

    key: CheckpointKey
    parent_id: str | None
    run_id: str | None
    checkpoint: Typed
    metadata: str
    channels: dict[str, str]
    blobs: Sequence[BlobRow]


@dataclass(frozen=True, slots=True)
class WriteRow:
    task_id: str
    idx: int
    channel: str
    value: Typed
    task_path: str


@dataclass(slots=True)
class StoredCheckpoint:
    """A checkpoint as read back: still serialised, with its channel values and pending writes."""

    key: CheckpointKey
    parent_id: str | None
    checkpoint: Typed
    metadata: str
    values: dict[str, Typed] = field(default_factory=dict)
    writes: list[tuple[str, str, Typed]] = field(default_factory=list)  # task_id, channel, value


@dataclass(frozen=True, slots=True)
class CheckpointQuery:
    """Which checkpoints to read; ``None`` means any. ``metadata`` is a JSON object text whose every
    top-level key the checkpoint's metadata must hold with an equal value."""

    thread_id: str | None = None
    checkpoint_ns: str | None = None
    checkpoint_id: str | None = None
    before_id: str | None = None
    metadata: str | None = None

    def stmt(self, dialect: Dialect, after: CheckpointKey | None, limit: int) -> Stmt:
        """Newest first by checkpoint id (LangGraph's ids sort by time), then thread and namespace so
        the order is total and ``after`` (the last row of the previous page) pages without gaps."""
        conditions: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("thread_id = ?", self.thread_id),
            ("checkpoint_ns = ?", self.checkpoint_ns),
            ("checkpoint_id = ?", self.checkpoint_id),
            ("checkpoint_id < ?", self.before_id),
        ):
            if value is not None:
                conditions.append(column)
                params.append(value)
        if self.metadata is not None:
            conditions.append(dialect.json_contains("metadata"))
            params.append(self.metadata)
        if after is not None:
            conditions.append("(checkpoint_id, thread_id, checkpoint_ns) < (?, ?, ?)")
            params.extend((after.checkpoint_id, after.thread_id, after.checkpoint_ns))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return Stmt(
            "SELECT thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint_type,"
            f" checkpoint, metadata FROM langgraph_checkpoints{where}"
            " ORDER BY checkpoint_id DESC, thread_id DESC, checkpoint_ns DESC LIMIT ?",
            (*params, limit),
            "all",
        )


# ---- threads as agents ---------------------------------------------------------------------------

_INSERT_THREAD = (
    "INSERT INTO agents (agent_id, template_id, created_at_ms, updated_at_ms, message_count, metadata,"
    " lineage, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO "
)


def ensure_thread_plan(
    thread_id: str, now_ms: int, *, touch: bool, lineage: Sequence[str] = ()
) -> Plan[None]:
    """Create the thread's agent if absent; ``touch`` marks an existing one as updated now, so
    retention by last update keeps threads that are in use."""
    info = AgentInfo(
        agent_id=thread_id,
        template_id=TEMPLATE_ID,
        created_at=ms_to_iso(now_ms),
        lineage=list(lineage),
        metadata={"source": TEMPLATE_ID},
    )
    row = info_row(info)
    action = "UPDATE SET updated_at_ms = excluded.updated_at_ms" if touch else "NOTHING"
    yield Stmt(
        _INSERT_THREAD + action,
        (row.agent_id, row.template_id, row.created_at_ms, now_ms, 0, row.metadata, row.lineage, row.info),
    )


# ---- writing -------------------------------------------------------------------------------------

_INSERT_BLOB = (
    "INSERT INTO langgraph_blobs (thread_id, checkpoint_ns, channel, version, value_type, value)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING"
)
_UPSERT_CHECKPOINT = (
    "INSERT INTO langgraph_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,"
    " run_id, checkpoint_type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET"
    " parent_checkpoint_id = excluded.parent_checkpoint_id, run_id = excluded.run_id,"
    " checkpoint_type = excluded.checkpoint_type, checkpoint = excluded.checkpoint,"
    " metadata = excluded.metadata"
)
KEY_IS = "thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
_INSERT_CHANNEL = (
    "INSERT INTO langgraph_checkpoint_channels (thread_id, checkpoint_ns, checkpoint_id, channel, version)"
    " VALUES (?, ?, ?, ?, ?)"
)
_INSERT_WRITE = (
    "INSERT INTO langgraph_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel,"
    " value_type, value, task_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO "
)


def put_checkpoint_plan(row: CheckpointRow, now_ms: int) -> Plan[None]:
    """Store one checkpoint: its thread's agent, its new blobs, its row and its channel versions.

    A blob's (channel, version) is immutable, so an existing one is kept: retrying a put, or a
    version two checkpoints share, never rewrites a value an older checkpoint reads."""
    key = row.key
    yield from ensure_thread_plan(key.thread_id, now_ms, touch=True)
    if row.blobs:
        blobs = [
            (key.thread_id, key.checkpoint_ns, b.channel, b.version, b.value_type, b.value) for b in row.blobs
        ]
        yield Stmt(_INSERT_BLOB, blobs, many=True)
    kind, body = row.checkpoint
    yield Stmt(_UPSERT_CHECKPOINT, (*key, row.parent_id, row.run_id, kind, body, row.metadata))
    # a checkpoint stored again (same id) holds exactly its new channel set
    yield Stmt(f"DELETE FROM langgraph_checkpoint_channels WHERE {KEY_IS}", key)
    if row.channels:
        yield Stmt(_INSERT_CHANNEL, [(*key, ch, version) for ch, version in row.channels.items()], many=True)


def put_writes_plan(key: CheckpointKey, writes: Sequence[WriteRow], now_ms: int) -> Plan[None]:
    """Store a task's pending writes, as LangGraph's savers do: a regular write (``idx >= 0``) already
    stored is kept, so a retried task cannot duplicate it; a special one (error, interrupt, resume,
    scheduled: ``idx < 0``) replaces the stored one."""
    yield from ensure_thread_plan(key.thread_id, now_ms, touch=False)
    for keep_stored in (True, False):
        rows = [
            (*key, w.task_id, w.idx, w.channel, w.value[0], w.value[1], w.task_path)
            for w in writes
            if (w.idx >= 0) == keep_stored
        ]
        if rows:
            action = (
                "NOTHING"
                if keep_stored
                else "UPDATE SET channel = excluded.channel, value_type = excluded.value_type,"
                " value = excluded.value, task_path = excluded.task_path"
            )
            yield Stmt(_INSERT_WRITE + action, rows, many=True)


# ---- reading -------------------------------------------------------------------------------------

BLOB_OF_CHANNEL = (
    "b.thread_id = r.thread_id AND b.checkpoint_ns = r.checkpoint_ns AND b.channel = r.channel"
    " AND b.version = r.version"
)


def _keys_in(columns: str, keys: Sequence[CheckpointKey]) -> tuple[str, list[str]]:
    """``(thread, ns, id) IN (VALUES ...)`` for a page of checkpoints, and its parameters."""
    rows = ", ".join(["(?, ?, ?)"] * len(keys))
    return f"({columns}) IN (VALUES {rows})", [part for key in keys for part in key]


def read_checkpoints_plan(
    dialect: Dialect, query: CheckpointQuery, after: CheckpointKey | None, limit: int
) -> Plan[list[StoredCheckpoint]]:
    """One page of checkpoints with their channel values and pending writes, in three statements
    whatever the page size. Pending writes come in ``writes_sort_key`` order (task path, task id,
    index), the order LangGraph applies them in."""
    rows = yield query.stmt(dialect, after, limit)
    page = [
        StoredCheckpoint(CheckpointKey(t, ns, cid), parent, (kind, bytes(body)), metadata)
        for t, ns, cid, parent, kind, body, metadata in rows
    ]
    if not page:
        return page
    by_key = {stored.key: stored for stored in page}
    condition, params = _keys_in("r.thread_id, r.checkpoint_ns, r.checkpoint_id", list(by_key))
    blobs = yield Stmt(
        "SELECT r.thread_id, r.checkpoint_ns, r.checkpoint_id, r.channel, b.value_type, b.value"
        f" FROM langgraph_checkpoint_channels AS r JOIN langgraph_blobs AS b ON {BLOB_OF_CHANNEL}"
        f" WHERE {condition} AND b.value_type <> '{EMPTY}'",
        params,
        "all",
    )
    for t, ns, cid, channel, kind, value in blobs:
        by_key[CheckpointKey(t, ns, cid)].values[channel] = (kind, _bytes(value))
    condition, params = _keys_in("thread_id, checkpoint_ns, checkpoint_id", list(by_key))
    writes = yield Stmt(
        "SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, channel, value_type, value"
        f" FROM langgraph_writes WHERE {condition} ORDER BY task_path, task_id, idx",
        params,
        "all",
    )
    for t, ns, cid, task_id, channel, kind, value in writes:
        by_key[CheckpointKey(t, ns, cid)].writes.append((task_id, channel, (kind, _bytes(value))))
    return page


def _bytes(value: Any) -> bytes:
    return b"" if value is None else bytes(value)
