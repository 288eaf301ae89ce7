"""SQLite's query plans for the main queries: an index serves each filter and gives the order.

A plan line ``SCAN messages`` (without ``USING INDEX``) reads the whole table; ``USE TEMP B-TREE FOR
ORDER BY`` sorts every match before the first row comes out. Neither may appear for a filtered query
that an index can serve; docs/queries.md shows the same plans.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kodestore import SqliteStore
from kodestore.db.base import Stmt
from kodestore.db.queries import (
    MessageQuery,
    SessionQuery,
    ToolCallQuery,
    cursor_of,
    messages_stmt,
    sessions_stmt,
    stats_stmt,
    tool_calls_stmt,
)
from kodestore.db.sqlite import SqliteDialect
from kodestore.testing import sample_info, sample_message, sample_tool_call

DIALECT = SqliteDialect()
STATES = ["COMPLETED", "FAILED", "PENDING"]


async def _fill(db: Path, files: Path) -> dict[str, Any]:
    async with SqliteStore(db, files) as store:
        for index in range(40):
            agent_id = f"agt-{index:03d}"
            info = sample_info(agent_id, template_id=f"tpl-{index % 4}")
            info.metadata = {"userId": f"u{index % 7}", "team": "core"}
            await store.save_info(agent_id, info)
            await store.save_messages(agent_id, [sample_message(i) for i in range(10)])
            calls = [sample_tool_call(i, STATES[i % 3], name=f"tool-{i % 4}") for i in range(6)]
            await store.save_tool_call_records(agent_id, calls)
        return {
            "sessions": (await store.query_sessions(limit=1))[0],
            "messages": (await store.query_messages(limit=1))[0],
            "tool_calls": (await store.query_tool_calls(limit=1))[0],
        }


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sqlite3.Connection, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("plans")
    rows = asyncio.run(_fill(root / "agents.db", root / "files"))
    conn = sqlite3.connect(root / "agents.db")
    yield conn, rows
    conn.close()


def plan(conn: sqlite3.Connection, stmt: Stmt) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {stmt.sql}", stmt.params)]


BUILDERS: dict[str, Callable[[dict[str, Any]], Stmt]] = {
    "sessions": lambda f: sessions_stmt(DIALECT, SessionQuery.build(**f)),
    "messages": lambda f: messages_stmt(DIALECT, MessageQuery.build(**f)),
    "tool_calls": lambda f: tool_calls_stmt(DIALECT, ToolCallQuery.build(**f)),
}
ROW, CURSOR = "<last row>", "<its cursor>"  # stand-ins for a row of the filled store
WINDOW = {"created_after": 1, "created_before": 2**40}

# (query, filters, the index that must serve it)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("sessions", {}, "agents_created"),
    ("sessions", {"template_id": "tpl-1"}, "agents_template_created"),
    ("sessions", {"sort_by": "updated_at"}, "agents_updated"),
    ("sessions", {"sort_by": "message_count", "sort_order": "asc"}, "agents_message_count"),
    ("sessions", WINDOW, "agents_created"),
    ("sessions", {"after": CURSOR}, "agents_created"),
    ("sessions", {"template_id": "tpl-1", "after": ROW}, "agents_template_created"),
    ("messages", {}, "messages_created"),
    ("messages", {"agent_id": "agt-001"}, "messages_agent_created"),
    ("messages", {"role": "user"}, "messages_role_created"),
    ("messages", {"agent_id": "agt-001", "role": "user"}, "messages_agent_created"),
    ("messages", {"content_type": "tool_use"}, "messages_created"),
    ("messages", WINDOW, "messages_created"),
    ("messages", {"after": CURSOR}, "messages_created"),
    ("messages", {"role": "user", "after": ROW}, "messages_role_created"),
    ("messages", {"agent_id": "agt-001", "after": ROW}, "messages_agent_created"),
    ("tool_calls", {}, "tool_calls_created"),
    ("tool_calls", {"agent_id": "agt-001"}, "tool_calls_agent_created"),
    ("tool_calls", {"tool_name": "tool-1"}, "tool_calls_name_created"),
    ("tool_calls", {"tool_name": "tool-1", "state": "FAILED"}, "tool_calls_name_state"),
    ("tool_calls", {"state": "FAILED"}, "tool_calls_state"),
    ("tool_calls", {"is_error": True}, "tool_calls_created"),
    ("tool_calls", {"has_approval": True}, "tool_calls_created"),
    ("tool_calls", {"after": CURSOR}, "tool_calls_created"),
    ("tool_calls", {"state": "FAILED", "after": ROW}, "tool_calls_state"),
]


def build(query: str, filters: dict[str, Any], rows: dict[str, Any]) -> Stmt:
    after = filters.get("after")
    if after is not None:
        row = rows[query]
        filters = {**filters, "after": row if after == ROW else cursor_of(row)}
    return BUILDERS[query](filters)


@pytest.mark.parametrize(("query", "filters", "index"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_an_index_serves_the_filter_and_the_order(
    db: tuple[sqlite3.Connection, dict[str, Any]], query: str, filters: dict[str, Any], index: str
) -> None:
    conn, rows = db
    lines = plan(conn, build(query, filters, rows))
    assert any(re.search(rf"USING (COVERING )?INDEX {index}\b", line) for line in lines), lines
    assert not any(re.fullmatch(r"SCAN (agents|messages|tool_calls)", line) for line in lines), lines
    assert "USE TEMP B-TREE FOR ORDER BY" not in lines, lines


def test_user_id_is_answered_by_the_expression_indexes(db: tuple[sqlite3.Connection, dict[str, Any]]) -> None:
    lines = plan(db[0], BUILDERS["sessions"]({"user_id": "u3"}))
    assert "MULTI-INDEX OR" in lines, lines
    assert any("INDEX agents_user_id" in line for line in lines), lines
    assert any("INDEX agents_user " in line for line in lines), lines


def test_stats_read_indexes_not_tables(db: tuple[sqlite3.Connection, dict[str, Any]]) -> None:
    for agent_id in (None, "agt-001"):
        lines = plan(db[0], stats_stmt(DIALECT, agent_id))
        assert not any(re.fullmatch(r"SCAN (messages|tool_calls)", line) for line in lines), lines
