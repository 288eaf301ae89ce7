"""The floor: the least database and disk work that persists one turn's new data.

Per turn, one transaction inserts only the two new message rows (``executemany``), the new tool-call
row and the info upsert, through statements the driver prepares once (SQLite's statement cache,
psycopg's prepared statements in pipeline mode; on Postgres the whole transaction is one round trip:
one pipeline in autocommit mode is one implicit transaction); then the five events go to the agent's
JSONL file as ONE ``os.write`` on an ``O_APPEND`` descriptor, without fsync. That is the store's
default durability: SQLite WAL with ``synchronous=NORMAL`` and events in the OS before the call
returns (a killed process loses nothing; power loss may lose the last commits). On Postgres the
commit waits for the server's WAL flush (``synchronous_commit`` as configured), for the floor and
the store alike.

Tables and indexes are the store's own (its migration files), so both pay the same index upkeep.
The floor runs synchronously in the calling thread, with no event loop and no thread hop: it is the
least work the hardware allows, so everything the store adds (asyncio, a thread hop, validation,
models, diffing) shows up in the ratio.

``per_call=True`` does the same least work in the runtime's call sequence instead (messages, tool
calls, events, info, each persisted before the next): three commits and five event writes a turn. It
is a reference, not the floor: what the 4-call sequence costs before the store adds anything.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from bench.workload import JSON, Turn
from kodestore.db.migrations import load_migrations


def schema_statements(dialect: str) -> list[str]:
    """The store's own tables and indexes: every statement of ``schema/<dialect>/NNN_*.sql``.

    Same layout, same indexes, so the floor pays the same index maintenance as the store; it leaves
    the store-only columns at their defaults (version tokens) or empty (content hashes).
    """
    return [statement for migration in load_migrations(dialect) for statement in migration.statements]


def schema_files(dialect: str) -> list[str]:
    return [f"{m.version:03d}_{m.name}.sql" for m in load_migrations(dialect)]


INSERT_MESSAGE = (
    "INSERT INTO messages (agent_id, seq, role, content, created_at, hash) VALUES (?, ?, ?, ?, ?, ?)"
)
INSERT_TOOL_CALL = (
    "INSERT INTO tool_calls (agent_id, id, position, name, state, is_error, approval_required,"
    " created_at, record, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
UPSERT_INFO = (
    "INSERT INTO agents (agent_id, template_id, created_at_ms, updated_at_ms, message_count, metadata,"
    " lineage, info) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET"
    " template_id = excluded.template_id, updated_at_ms = excluded.updated_at_ms,"
    " message_count = excluded.message_count, metadata = excluded.metadata,"
    " lineage = excluded.lineage, info = excluded.info"
)

dumps = orjson.dumps
NO_HASH = b""  # the store's hash columns are NOT NULL; the floor diffs nothing, so it stores none


@functools.cache
def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


def info_params(info: JSON, created_ms: int, now_ms: int) -> tuple[Any, ...]:
    return (
        info["agentId"],
        info["templateId"],
        created_ms,
        now_ms,
        info["messageCount"],
        dumps(info["metadata"]).decode(),
        dumps(info["lineage"]).decode(),
        dumps(info).decode(),
    )


def turn_params(aid: str, turn: Turn, first_seq: int) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
    """Rows for the two new messages and the new tool call, JSON encoded once."""
    ts = turn.timestamp
    messages = [
        (aid, first_seq, turn.user["role"], dumps(turn.user["content"]).decode(), ts, NO_HASH),
        (aid, first_seq + 1, turn.assistant["role"], dumps(turn.assistant["content"]).decode(), ts, NO_HASH),
    ]
    record = turn.record
    approval: Any = record["approval"]
    call = (
        aid,
        record["id"],
        turn.turn,
        record["name"],
        record["state"],
        bool(record["isError"]),
        approval.get("required") is True,
        record["createdAt"],
        dumps(record).decode(),
        NO_HASH,
    )
    return messages, call


class EventFiles:
    """One ``O_APPEND`` descriptor per agent under ``<base>/<agent_id>/events.jsonl``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._fds: dict[str, int] = {}

    def append(self, aid: str, events: tuple[JSON, ...]) -> None:
        fd = self._fds.get(aid)
        if fd is None:
            directory = self.base / aid
            directory.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = self._fds[aid] = os.open(directory / "events.jsonl", flags, 0o600)
        os.write(fd, b"".join([dumps(event) + b"\n" for event in events]))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class _Floor:
    """One turn's new rows and events, in one transaction or (``per_call``) in the runtime's calls."""

    events: EventFiles
    per_call: bool

    def _transaction(self, statements: list[tuple[str, Any, bool]]) -> None:
        """Run ``(sql, params, many)`` statements in one transaction."""
        raise NotImplementedError

    def save_turn(self, aid: str, turn: Turn, first_seq: int, info: JSON, created_ms: int) -> None:
        messages, call = turn_params(aid, turn, first_seq)
        writes = [
            (INSERT_MESSAGE, messages, True),
            (INSERT_TOOL_CALL, call, False),
            (UPSERT_INFO, info_params(info, created_ms, turn.timestamp), False),
        ]
        if not self.per_call:
            self._transaction(writes)
            self.events.append(aid, turn.events)
            return
        self._transaction(writes[:1])
        self._transaction(writes[1:2])
        for event in turn.events:
            self.events.append(aid, (event,))
        self._transaction(writes[2:])


class SqliteFloor(_Floor):
    """SQLite WAL, ``synchronous=NORMAL``, one connection used from this thread only."""

    def __init__(self, root: Path, per_call: bool = False) -> None:
        self.per_call = per_call
        self.db_path = root / "floor.db"
        self.events = EventFiles(root / "files")
        self.conn = sqlite3.connect(self.db_path, isolation_level=None, cached_statements=256)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        for statement in schema_statements("sqlite"):
            self.conn.execute(statement)

    def create_agent(self, info: JSON, created_ms: int) -> None:
        self.conn.execute(UPSERT_INFO, info_params(info, created_ms, created_ms))

    def _transaction(self, statements: list[tuple[str, Any, bool]]) -> None:
        conn = self.conn
        conn.execute("BEGIN")
        for sql, params, many in statements:
            if many:
                conn.executemany(sql, params)
            else:
                conn.execute(sql, params)
        conn.execute("COMMIT")

    def counts(self) -> tuple[int, int]:
        """(messages, tool calls) stored: proof that the timed work happened."""
        row = self.conn.execute(_COUNTS).fetchone()
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.conn.close()
        self.events.close()


class PostgresFloor(_Floor):
    """psycopg 3, one connection, each transaction one pipeline in autocommit mode: one implicit
    transaction, committed at the pipeline's end, in one round trip."""

    def __init__(self, root: Path, dsn: str, schema: str, per_call: bool = False) -> None:
        import psycopg

        self.per_call = per_call
        self.events = EventFiles(root / "files")
        self.conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=0)
        self.conn.execute(f"SET search_path TO {schema}")
        with self.conn.transaction():
            for statement in schema_statements("postgres"):
                self.conn.execute(statement)
        self.cur = self.conn.cursor()

    def create_agent(self, info: JSON, created_ms: int) -> None:
        self.conn.execute(_pg(UPSERT_INFO), info_params(info, created_ms, created_ms))

    def _transaction(self, statements: list[tuple[str, Any, bool]]) -> None:
        cur = self.cur
        with self.conn.pipeline():
            for sql, params, many in statements:
                if many:
                    cur.executemany(_pg(sql), params)
                else:
                    cur.execute(_pg(sql), params)

    def counts(self) -> tuple[int, int]:
        row = self.conn.execute(_COUNTS).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def close(self) -> None:
        self.conn.close()
        self.events.close()


_COUNTS = "SELECT (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM tool_calls)"
