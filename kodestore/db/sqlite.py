"""SQLite: the dialect and a driver that runs each plan on one connection, in one transaction.

Plans run on a dedicated thread, one hop off the event loop per plan, except *light* writes (one
turn's save: a handful of rows) when the connection is free: those run right on the calling thread,
as a hop costs more than the write itself (tens of microseconds in WAL with ``synchronous=NORMAL``).
Such an inline write never waits for another process's lock: if the database is busy it goes to the
thread, which waits up to ``busy_timeout``. SQLite sees a single writer per process. WAL with
``synchronous=NORMAL`` survives a killed process; ``durability="fsync"`` (``synchronous=FULL``)
never runs inline, as every commit then waits for the disk. WAL checkpoints run on a thread of
their own (``sqlite_checkpoint``), never inside a save's commit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kodestore.config import Durability
from kodestore.db.base import Batch, Dialect, PlanFactory, SqlDriver, Stmt, T
from kodestore.db.migrations import SchemaStatus, migrate_plan, status_plan
from kodestore.db.sqlite_checkpoint import WalCheckpointer
from kodestore.errors import KodeStoreError, StorageError
from kodestore.validation import now_ms

BUSY_TIMEOUT_MS = 30_000
YIELD_INTERVAL_S = 0.002  # the longest an inline writer keeps the event loop to itself
_WAIT_WHEN_BUSY = f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"
_FAIL_WHEN_BUSY = "PRAGMA busy_timeout = 0"


class _Busy(Exception):
    """Another process holds the write lock: an inline write hands its plan to the thread."""


class SqliteDialect(Dialect):
    name = "sqlite"
    for_update = ""  # BEGIN IMMEDIATE already holds the write lock
    is_same = "IS"

    # ``->`` yields a value's JSON text as stored, and ``json_quote`` escapes exactly as orjson does,
    # so strings compare in full: json_extract and json_each values stop at the first NUL character.

    def content_has_type(self, column: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM json_each({column}) AS block WHERE block.type = 'object'"
            " AND block.value -> '$.\"type\"' = json_quote(?))"
        )

    def json_key_is(self, column: str, key: str) -> str:
        path = f"'$.\"{key}\"'"
        return f"{column} -> {path} = (? -> {path})"  # the column side is what 002's indexes hold

    def json_array_has(self, column: str) -> str:
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = ?)"

    def json_contains(self, column: str) -> str:
        # Every node of the wanted object (w) has a node at the same path in the column (h) with an
        # equal value, and the column has no other node under the wanted keys (so nested values are
        # equal, not merely contained). Strings compare by stored JSON text where SQLite can address
        # the path (not through a key holding '"'), else by decoded value.
        same_node = (
            "(h.type = w.type OR (h.type IN ('integer', 'real') AND w.type IN ('integer', 'real')))"
            " AND (h.type IN ('object', 'array')"
            f" OR (h.type = 'text' AND COALESCE(({column} -> h.fullkey) = (want.doc -> w.fullkey),"
            " h.atom = w.atom))"
            " OR (h.type NOT IN ('text', 'object', 'array') AND h.atom IS w.atom))"
        )
        under_wanted_key = (
            "(h.fullkey = top.fullkey"
            " OR substr(h.fullkey, 1, length(top.fullkey) + 1) IN (top.fullkey || '.', top.fullkey || '['))"
        )
        return (
            "EXISTS (SELECT 1 FROM (SELECT ? AS doc) AS want WHERE NOT EXISTS ("
            "SELECT 1 FROM json_tree(want.doc) AS w WHERE w.parent IS NOT NULL AND NOT EXISTS ("
            f"SELECT 1 FROM json_tree({column}) AS h WHERE h.fullkey = w.fullkey AND {same_node}))"
            f" AND NOT EXISTS (SELECT 1 FROM json_each(want.doc) AS top, json_tree({column}) AS h"
            f" WHERE {under_wanted_key} AND NOT EXISTS ("
            "SELECT 1 FROM json_tree(want.doc) AS w WHERE w.fullkey = h.fullkey)))"
        )

    def json_object_agg(self, key: str, value: str) -> str:
        return f"json_group_object({key}, {value})"

    def prefix_range(self, column: str) -> str:
        return f"{column} >= ? AND {column} < ?"  # TEXT compares by code point (BINARY collation)

    def table_exists(self, table: str) -> Stmt:
        return Stmt("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,), "one")


def _connect(path: str, durability: Durability) -> sqlite3.Connection:
    try:
        return _configure(path, durability)
    except sqlite3.Error as exc:
        raise _translate(exc) from exc
    except OSError as exc:
        raise StorageError(f"sqlite: cannot create {path}: {exc.strerror or exc}") from exc


def _configure(path: str, durability: Durability) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.path.exists(path):  # owner-only from the first byte
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=256)
    conn.execute(_WAIT_WHEN_BUSY)
    if path != ":memory:":
        _use_wal(conn, path)
    # NORMAL: a commit survives a killed process; FULL: also power loss (an fsync per commit)
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'fsync' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys = ON")
    if path != ":memory:":
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # the driver's WalCheckpointer does it
    conn.execute(_FAIL_WHEN_BUSY)  # between plans: an inline write must never wait (see the driver)
    return conn


def _use_wal(conn: sqlite3.Connection, path: str) -> None:
    """Switch the file to WAL (a no-op once it is: the mode persists in the file).

    Converting a new file takes an exclusive lock for which SQLite never calls the busy handler, so
    processes opening one new file together get "database is locked" at once; retry within the busy
    timeout instead."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
            continue
        if mode != "wal":
            raise StorageError(f"sqlite: {path} cannot use WAL (journal mode stays {mode!r})")
        return


class SqliteDriver(SqlDriver):
    """Plans on one connection in one thread. ``path=":memory:"`` keeps everything in RAM."""

    dialect = SqliteDialect()

    def __init__(self, path: str | os.PathLike[str], durability: Durability = "os") -> None:
        self.path = str(path)
        self.durability: Durability = durability
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # held by whoever uses the connection: the driver's thread, or the loop running a write inline
        self._conn_lock = threading.Lock()
        self._inline = durability == "os"
        self._checkpointer: WalCheckpointer | None = None
        self._yield_at = 0.0  # monotonic time at which the next inline write yields to the loop

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    async def open(self, *, migrate: bool = True) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kodestore-sqlite")
        try:
            self._conn = await self._call(_connect, self.path, self.durability)
            if self.path != ":memory:":
                self._checkpointer = WalCheckpointer(self.path)
                await self._call(self._checkpointer.start)
            if migrate:
                await self.run(lambda: migrate_plan(self.dialect, now_ms()), write=True)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        conn, self._conn = self._conn, None
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await self._call(checkpointer.stop)
        if conn is not None:
            await self._call(self._close_connection, conn)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def _call(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None, "driver not open"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, plan: PlanFactory[T], *, write: bool, light: bool = False) -> T:
        if light and write and self._inline:
            ran, result = self._try_inline(plan)
            if ran:
                # a task saving in a tight loop must not starve others: it yields to the loop now
                # and then (a yield on every save would cost about a tenth of the save)
                now = time.monotonic()
                if now >= self._yield_at:
                    self._yield_at = now + YIELD_INTERVAL_S
                    await asyncio.sleep(0)
                return result  # type: ignore[return-value]
        return await self._call(self._run_in_thread, plan, write)  # type: ignore[no-any-return]

    def _try_inline(self, plan: PlanFactory[T]) -> tuple[bool, T | None]:
        """``(True, result)`` once the plan ran right here; ``(False, None)`` when the connection is in
        use by the thread or another process holds the write lock (the thread then waits for it)."""
        if not self._conn_lock.acquire(blocking=False):
            return False, None
        try:
            return True, self._run_inline(plan)
        except _Busy:
            return False, None
        finally:
            self._conn_lock.release()

    def _close_connection(self, conn: sqlite3.Connection) -> None:
        with self._conn_lock:
            conn.close()

    def _run_inline(self, plan: PlanFactory[T]) -> T:
        """Run on the calling thread, giving up at once (``_Busy``) if the write lock is taken:
        the connection's busy timeout is 0 except while the thread runs a plan."""
        conn = self._conn
        assert conn is not None, "driver not open"
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                raise _Busy from exc
            raise _translate(exc) from exc
        return self._finish(conn, plan, write=True)

    def _run_in_thread(self, plan: PlanFactory[T], write: bool) -> T:
        """Run on the driver's thread, waiting up to ``BUSY_TIMEOUT_MS`` for other processes."""
        conn = self._conn
        assert conn is not None, "driver not open"
        with self._conn_lock:
            try:
                conn.execute(_WAIT_WHEN_BUSY)
                try:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                    return self._finish(conn, plan, write)
                finally:
                    conn.execute(_FAIL_WHEN_BUSY)
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    def _finish(self, conn: sqlite3.Connection, plan: PlanFactory[T], write: bool) -> T:
        """Run ``plan`` in the transaction just begun; commit, or roll back if anything raises."""
        try:
            try:
                steps = plan()
                result: Any = None
                while True:
                    try:
                        stmt = steps.send(result)
                    except StopIteration as done:
                        conn.execute("COMMIT")
                        if write and self._checkpointer is not None:
                            self._checkpointer.committed(conn)
                        return done.value  # type: ignore[no-any-return]
                    result = _execute(conn, stmt)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def ping(self) -> None:
        await self.run(_ping_plan, write=False)

    async def size_bytes(self) -> int:
        if self.path == ":memory:":
            return int(await self.run(_page_bytes_plan, write=False))
        return sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))

    async def schema_status(self) -> SchemaStatus:
        return await self.run(lambda: status_plan(self.dialect), write=False)


def _execute(conn: sqlite3.Connection, stmt: Stmt | Batch) -> Any:
    if isinstance(stmt, Batch):
        return [_execute(conn, each) for each in stmt.stmts]
    if stmt.many:
        conn.executemany(stmt.sql, stmt.params)
        return None
    cursor = conn.execute(stmt.sql, stmt.params)
    if stmt.fetch == "one":
        return cursor.fetchone()
    if stmt.fetch == "all":
        return cursor.fetchall()
    return None


def _ping_plan() -> Any:
    return (yield Stmt("SELECT 1", (), "one"))


def _page_bytes_plan() -> Any:
    row = yield Stmt("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()", (), "one")
    return row[0]


def _translate(exc: sqlite3.Error) -> KodeStoreError:
    """One place where SQLite's errors become kodestore's."""
    message = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        return StorageError(f"sqlite: {message}")
    return KodeStoreError(f"sqlite: {message}")
