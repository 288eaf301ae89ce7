"""The statement timing of ``python -m bench.hotspots``: what it counts is what ran."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.hotspots import StatementClock, statement_kind, statement_table, timed_statements


def test_statements_are_named_by_verb_and_table() -> None:
    assert statement_kind("UPDATE agents SET a = ? WHERE agent_id = ?") == "UPDATE agents"
    assert statement_kind("INSERT INTO messages (agent_id) VALUES (?)") == "INSERT messages"
    assert statement_kind("  delete from tool_calls WHERE id = ?") == "DELETE tool_calls"
    assert statement_kind("BEGIN IMMEDIATE") == "BEGIN IMMEDIATE"
    assert statement_kind("COMMIT") == "COMMIT"


def test_connections_opened_inside_count_each_statement_and_outside_nothing(tmp_path: Path) -> None:
    statements = StatementClock()
    with timed_statements(statements):
        conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
        conn.execute("CREATE TABLE agents (agent_id TEXT PRIMARY KEY, n INTEGER)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO agents VALUES (?, ?)", [("a", 1), ("b", 2)])
        conn.execute("UPDATE agents SET n = n + 1 WHERE agent_id = ?", ("a",))
        conn.execute("COMMIT")
    untimed = sqlite3.connect(tmp_path / "t.db")
    untimed.execute("SELECT * FROM agents").fetchall()
    conn.execute("UPDATE agents SET n = 0")  # opened inside: still timed
    conn.close()
    untimed.close()

    expected = {"CREATE TABLE": 1, "BEGIN": 1, "INSERT agents": 1, "UPDATE agents": 2, "COMMIT": 1}
    assert statements.calls == expected
    assert set(statements.ns) == set(expected) and all(statements.ns.values())
    lines = statement_table(statements, count=2)
    assert "SQL per turn on the saving thread" in lines[0]
    assert any(line.endswith("1.00 x  UPDATE agents") for line in lines)
