"""Tables whose rows belong to an agent beside its records: suspended states, feedback and LangGraph
checkpoints (schema 004 and 005). Described once, here, for export/import (backup, restore, migrate)
and for LangGraph's ``copy_thread``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class SideTable:
    """A table of rows that belong to an agent beside its records (schema 004 and 005).

    ``columns`` are the other columns in insert order, primary-key columns first (rows are exported
    ordered by owner and ``key``); ``binary`` ones hold bytes, ``json`` ones JSON text (``jsonb`` on
    Postgres). None of them is a boolean, so every value copies between dialects unchanged."""

    name: str
    owner: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    binary: frozenset[str] = frozenset()
    json: frozenset[str] = frozenset()


SIDE_TABLES: tuple[SideTable, ...] = (
    SideTable(
        "suspended_states",
        "agent_id",
        ("state_id", "payload", "created_at_ms", "expires_at_ms"),
        ("state_id",),
        json=frozenset({"payload"}),
    ),
    SideTable(
        "feedback",
        "agent_id",
        ("feedback_id", "rating", "comment", "message_seq", "correction", "metadata", "created_at_ms"),
        ("feedback_id",),
        json=frozenset({"correction", "metadata"}),
    ),
    SideTable(
        "langgraph_blobs",
        "thread_id",
        ("checkpoint_ns", "channel", "version", "value_type", "value"),
        ("checkpoint_ns", "channel", "version"),
        binary=frozenset({"value"}),
    ),
    SideTable(
        "langgraph_checkpoints",
        "thread_id",
        (
            "checkpoint_ns",
            "checkpoint_id",
            "parent_checkpoint_id",
            "run_id",
            "checkpoint_type",
            "checkpoint",
            "metadata",
        ),
        ("checkpoint_ns", "checkpoint_id"),
        binary=frozenset({"checkpoint"}),
        json=frozenset({"metadata"}),
    ),
    SideTable(
        "langgraph_checkpoint_channels",
        "thread_id",
        ("checkpoint_ns", "checkpoint_id", "channel", "version"),
        ("checkpoint_ns", "checkpoint_id", "channel"),
    ),
    SideTable(
        "langgraph_writes",
        "thread_id",
        ("checkpoint_ns", "checkpoint_id", "task_id", "idx", "channel", "value_type", "value", "task_path"),
        ("checkpoint_ns", "checkpoint_id", "task_id", "idx"),
        binary=frozenset({"value"}),
    ),
)
"""The side tables in foreign-key order (channel versions need their checkpoints): inserts go in
this order, deletes in reverse."""
SIDE_TABLE_NAMES = frozenset(table.name for table in SIDE_TABLES)


def _canonical_json(text: Any) -> Any:
    """JSON text with sorted keys and no spaces: SQLite keeps the text it was given, Postgres'
    ``jsonb`` its own, so both export the same text for the same value."""
    if text is None:
        return None
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:  # not JSON after all: copied as it is
        return str(text)


def side_row(table: SideTable, values: Sequence[Any]) -> tuple[Any, ...]:
    """A stored row as exported: bytes as ``bytes`` (not a memoryview), JSON as canonical text."""
    out: list[Any] = []
    for column, value in zip(table.columns, values, strict=True):
        if value is not None and column in table.binary:
            value = bytes(value)
        elif column in table.json:
            value = _canonical_json(value)
        out.append(value)
    return tuple(out)


def check_side_rows(side_rows: Any) -> None:
    """``ValueError`` unless ``side_rows`` maps known side tables to rows of their width."""
    if not isinstance(side_rows, dict):
        raise ValueError("side_rows must be a dict of table name -> rows")
    widths = {table.name: len(table.columns) for table in SIDE_TABLES}
    for name, rows in side_rows.items():
        if name not in widths:
            raise ValueError(f"side_rows: unknown table {name!r}")
        if not isinstance(rows, list) or not all(
            isinstance(row, tuple) and len(row) == widths[name] for row in rows
        ):
            raise ValueError(f"side_rows[{name!r}] must be a list of {widths[name]}-tuples")
