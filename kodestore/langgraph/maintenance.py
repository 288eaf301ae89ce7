"""Deleting, pruning and copying LangGraph threads: the maintenance plans of ``KodeCheckpointSaver``.

Everything happens in SQL on the stored rows; no value is deserialised. Writes have no foreign key to
their checkpoint (LangGraph may store a task's writes before that checkpoint's transaction commits),
so deleting checkpoints deletes their writes explicitly; blobs are dropped once no checkpoint of the
thread points at their version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kodestore.db.base import Plan, Row, Stmt
from kodestore.db.side_tables import SIDE_TABLES
from kodestore.jsonutil import loads
from kodestore.langgraph.plans import (
    BLOB_OF_CHANNEL,
    EMPTY,
    KEY_IS,
    TEMPLATE_ID,
    CheckpointKey,
    ensure_thread_plan,
)

MAX_PARAMS = 500
"""Values bound in one ``IN (...)`` list: far below SQLite's and Postgres's limits."""
COUNTERS_KEY = "counters_since_delta_snapshot"
"""Metadata key naming the DeltaChannels whose value the checkpoint does not store."""


# ---- deleting ------------------------------------------------------------------------------------

_THREAD_TABLES = ("langgraph_writes", "langgraph_checkpoints", "langgraph_blobs")
_SAVER_MADE_AGENT = (
    "DELETE FROM agents WHERE agent_id = ? AND template_id = ?"
    " AND NOT EXISTS (SELECT 1 FROM messages WHERE agent_id = ?)"
    " AND NOT EXISTS (SELECT 1 FROM tool_calls WHERE agent_id = ?)"
    " AND NOT EXISTS (SELECT 1 FROM snapshots WHERE agent_id = ?)"
)


def delete_thread_plan(thread_id: str) -> Plan[None]:
    """Every checkpoint, blob and write of the thread; and its agent when the saver made it (template
    ``"langgraph"``, no messages, tool calls or snapshots), so the session goes with the thread. An
    agent that holds runtime state of its own keeps it."""
    for table in _THREAD_TABLES:  # channel versions go with their checkpoints (ON DELETE CASCADE)
        yield Stmt(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))
    yield Stmt(_SAVER_MADE_AGENT, (thread_id, TEMPLATE_ID, thread_id, thread_id, thread_id))


def _delete_checkpoints(where: str, params: Sequence[Any]) -> Plan[None]:
    """Checkpoints matching ``where`` and their pending writes (writes have no foreign key: LangGraph
    may store a task's writes before the checkpoint they belong to is committed)."""
    yield Stmt(
        "DELETE FROM langgraph_writes WHERE (thread_id, checkpoint_ns, checkpoint_id) IN"
        f" (SELECT thread_id, checkpoint_ns, checkpoint_id FROM langgraph_checkpoints WHERE {where})",
        params,
    )
    yield Stmt(f"DELETE FROM langgraph_checkpoints WHERE {where}", params)


def _drop_unreferenced_blobs(thread_id: str) -> Plan[None]:
    yield Stmt(
        "DELETE FROM langgraph_blobs WHERE thread_id = ? AND NOT EXISTS (SELECT 1 FROM"
        " langgraph_checkpoint_channels AS r WHERE r.thread_id = langgraph_blobs.thread_id"
        " AND r.checkpoint_ns = langgraph_blobs.checkpoint_ns AND r.channel = langgraph_blobs.channel"
        " AND r.version = langgraph_blobs.version)",
        (thread_id,),
    )


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), MAX_PARAMS):
        yield values[start : start + MAX_PARAMS]


def delete_runs_plan(run_ids: Sequence[str]) -> Plan[None]:
    """Checkpoints whose metadata ``run_id`` is listed, their writes, and the blobs only they used."""
    threads: set[str] = set()
    for chunk in _chunks(run_ids):
        where = f"run_id IN ({', '.join('?' * len(chunk))})"
        found = yield Stmt(
            f"SELECT DISTINCT thread_id FROM langgraph_checkpoints WHERE {where}", chunk, "all"
        )
        threads.update(str(row[0]) for row in found)
        yield from _delete_checkpoints(where, chunk)
    for thread_id in sorted(threads):
        yield from _drop_unreferenced_blobs(thread_id)


def prune_plan(thread_ids: Sequence[str], *, keep_latest: bool) -> Plan[None]:
    """``keep_latest``: each namespace of each thread keeps its newest checkpoint (and its writes),
    plus the ancestors its DeltaChannels are rebuilt from; otherwise the threads are deleted."""
    for thread_id in thread_ids:
        if not keep_latest:
            yield from delete_thread_plan(thread_id)
            continue
        heads = yield Stmt(
            "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, metadata FROM langgraph_checkpoints"
            " AS c WHERE thread_id = ? AND NOT EXISTS (SELECT 1 FROM langgraph_checkpoints AS n"
            " WHERE n.thread_id = c.thread_id AND n.checkpoint_ns = c.checkpoint_ns"
            " AND n.checkpoint_id > c.checkpoint_id)",
            (thread_id,),
            "all",
        )
        for ns, head_id, parent_id, metadata in heads:
            head = CheckpointKey(thread_id, ns, head_id)
            kept = yield from _delta_ancestors(head, parent_id, metadata)
            where = (
                f"thread_id = ? AND checkpoint_ns = ? AND checkpoint_id NOT IN ({', '.join('?' * len(kept))})"
            )
            yield from _delete_checkpoints(where, (thread_id, ns, *kept))
        yield from _drop_unreferenced_blobs(thread_id)


def _stored_channels(key: CheckpointKey) -> Plan[dict[str, bool]]:
    """Channel -> whether the checkpoint stores a value for it (False: empty, or a DeltaChannel
    rebuilt from its ancestors' writes)."""
    rows: list[Row] = yield Stmt(
        "SELECT r.channel, b.value_type FROM langgraph_checkpoint_channels AS r"
        f" LEFT JOIN langgraph_blobs AS b ON {BLOB_OF_CHANNEL}"
        " WHERE r.thread_id = ? AND r.checkpoint_ns = ? AND r.checkpoint_id = ?",
        key,
        "all",
    )
    return {str(channel): kind is not None and kind != EMPTY for channel, kind in rows}


def _delta_ancestors(head: CheckpointKey, parent_id: str | None, metadata: str) -> Plan[list[str]]:
    """Ids of the head and of the ancestors ``keep_latest`` must keep for it.

    A DeltaChannel stores its value only every N updates; in between, LangGraph rebuilds it by
    replaying the writes of the ancestors back to the nearest one that stores it. The head's metadata
    names those channels (``counters_since_delta_snapshot``), so the walk follows parents until each
    has a stored value; a thread without DeltaChannels keeps its head alone."""
    counters = loads(metadata).get(COUNTERS_KEY)
    kept = [head.checkpoint_id]
    if not isinstance(counters, dict) or not counters:
        return kept
    at_head = yield from _stored_channels(head)
    pending = {ch for ch in counters if ch in at_head and not at_head[ch]}
    while pending and parent_id is not None:
        row = yield Stmt(
            f"SELECT parent_checkpoint_id FROM langgraph_checkpoints WHERE {KEY_IS}",
            (head.thread_id, head.checkpoint_ns, parent_id),
            "one",
        )
        if row is None:  # the chain is already cut: nothing older can help
            break
        kept.append(parent_id)
        stored = yield from _stored_channels(CheckpointKey(head.thread_id, head.checkpoint_ns, parent_id))
        pending = {ch for ch in pending if not stored.get(ch)}
        parent_id = row[0]
    return kept


# ---- copying -------------------------------------------------------------------------------------

# in foreign-key order (channel versions need their checkpoints), as backup and migrate copy them
_COPIED_COLUMNS = tuple(
    (table.name, ", ".join(table.columns)) for table in SIDE_TABLES if table.name.startswith("langgraph_")
)


def copy_thread_plan(source_id: str, target_id: str, now_ms: int) -> Plan[bool]:
    """Copy every checkpoint, blob and write of ``source_id`` to ``target_id``, row for row in SQL (no
    value is deserialised); False when the source has no checkpoint (then nothing is written).

    A target without an agent gets one whose lineage is the source's plus the source, as
    ``ExtendedStore.fork`` records a fork; rows the target already holds are kept."""
    found = yield Stmt(
        "SELECT lineage FROM agents WHERE agent_id = ?"
        " AND EXISTS (SELECT 1 FROM langgraph_checkpoints WHERE thread_id = ?)",
        (source_id, source_id),
        "one",
    )
    if found is None:
        return False
    lineage = [*loads(found[0]), source_id]
    yield from ensure_thread_plan(target_id, now_ms, touch=True, lineage=lineage)
    for table, columns in _COPIED_COLUMNS:
        yield Stmt(
            f"INSERT INTO {table} (thread_id, {columns}) SELECT ?, {columns} FROM {table}"
            " WHERE thread_id = ? ON CONFLICT DO NOTHING",
            (target_id, source_id),
        )
    return True
