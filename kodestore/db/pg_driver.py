"""Postgres: a driver that runs each plan in one transaction on a pooled async connection.

The pool is ours (opened from the DSN, closed by ``close``) or the caller's (never closed here). Every
checkout checks the connection and drops those the server killed (restart, ``pg_terminate_backend``,
idle timeout), so the next call after an outage succeeds instead of failing once per dead connection.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import re
import select
import time
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager, nullcontext
from functools import lru_cache
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.adapt import AdaptersMap
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from kodestore.config import PostgresOptions, redact_dsn
from kodestore.db.base import Batch, Plan, PlanFactory, SqlDriver, Stmt, T
from kodestore.db.migrations import SchemaStatus, migrate_plan, status_plan
from kodestore.db.pg_dialect import PostgresDialect
from kodestore.db.pg_errors import translate
from kodestore.db.pg_text import install_text_codec
from kodestore.errors import ConfigError, KodeStoreError, StorageError
from kodestore.validation import now_ms

Connection: TypeAlias = AsyncConnection[TupleRow]
Pool: TypeAlias = AsyncConnectionPool[Connection]


class _OwnConnection(AsyncConnection[TupleRow]):
    """The connections we open: each keeps one cursor for the statements of the plans it runs (making
    and closing one per statement cost 5% of a save's client instructions) and one poll object for the
    check before each plan (``_quiet``)."""

    _statement_cursor: AsyncCursor[TupleRow] | None = None
    _socket_poller: select.poll | None = None

    def statement_cursor(self) -> AsyncCursor[TupleRow]:
        cursor = self._statement_cursor
        if cursor is None:
            cursor = self._statement_cursor = self.cursor()
        return cursor

    def socket_poller(self) -> select.poll:
        """A poll object watching the socket for input (``_quiet``): built once, not per check."""
        poller = self._socket_poller
        if poller is None:
            poller = self._socket_poller = select.poll()
            poller.register(self.pgconn.socket, select.POLLIN)
        return poller


APPLICATION_NAME = "kodestore"

_ADAPTERS = AdaptersMap(psycopg.adapters)
install_text_codec(_ADAPTERS)

# a single-quoted literal or double-quoted identifier (kept, ``%`` doubled), a placeholder, or a ``%``
_SQL_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%")


@lru_cache(maxsize=1024)
def render(query: str) -> str:
    """``?`` placeholders as psycopg's ``%s``; a literal ``%`` as ``%%``. As on SQLite, a ``?`` inside a
    quoted literal is not a placeholder."""

    def token(match: re.Match[str]) -> str:
        text = match.group()
        if text == "?":
            return "%s"
        return text.replace("%", "%%")

    return _SQL_TOKEN.sub(token, query)


_PLAN_ATTEMPTS = 3
# A connection stays out of our pool between plans for at most this long (see ``_take_kept``)
KEEP_CONNECTION_S = 5.0


# schema/postgres/006_guarded_saves.sql: the guard's matched rows, or an error of this SQLSTATE
_EXPECT_ROW = "SELECT kodestore_expect_row(COUNT(*)) FROM guard"
_STALE_SQLSTATE = "KS409"


class _RunAgain(Exception):
    """The connection died where running the work again on another connection is safe: before
    COMMIT (the server rolled the transaction back), during a read alone, or during a guarded batch
    (see ``_run_guarded``)."""

    def __init__(self, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.error = error


def _forget_abandoned(tasks: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def forget(task: asyncio.Future[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned ping's failure is already reported

    return forget


def _ping_plan() -> Generator[Stmt, Any, Any]:
    return (yield Stmt("SELECT 1", (), "one"))


class PostgresDriver(SqlDriver):
    """Plans on pooled connections whose ``search_path`` is the configured schema."""

    dialect: PostgresDialect

    def __init__(self, options: PostgresOptions) -> None:
        self.options = options
        self.dialect = PostgresDialect(options.schema)
        self._owns_pool = options.pool is None
        self._pool: Pool | None = options.pool
        self._timeout_s = options.connection_timeout_ms / 1000
        self._set_search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(options.schema))
        self._set_local_search_path = sql.SQL("SET LOCAL search_path TO {}").format(
            sql.Identifier(options.schema)
        )
        self._create_schema = (
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(options.schema)).as_string()
        )
        self._abandoned: set[asyncio.Future[Any]] = set()
        # the last plan's connection and when it left the pool (see ``_take_kept``)
        self._kept: tuple[Connection, float] | None = None
        self._checkouts = 0  # plans of this driver waiting for a connection from the pool
        #: migrations this driver applied when it opened (empty when the schema was current)
        self.migrated: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"postgres:{redact_dsn(self.options.dsn)} schema={self.options.schema}"

    def translate_error(self, exc: Exception) -> KodeStoreError:
        return translate(exc, self.options.dsn)

    # ---- connections -----------------------------------------------------------------------------

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``AsyncConnection.connect`` used for every connection we open."""
        try:
            in_dsn = conninfo_to_dict(self.options.dsn)
        except psycopg.Error as exc:
            raise ConfigError(f"invalid Postgres DSN {redact_dsn(self.options.dsn)!r}") from exc
        kwargs: dict[str, Any] = {
            # a statement alone is its own transaction (one round trip); plans open theirs (BEGIN)
            "autocommit": True,
            "connect_timeout": max(1, math.ceil(self._timeout_s)),
            "client_encoding": "utf8",
            "context": _ADAPTERS,  # the NUL-safe text codec, on every connection
        }
        if "application_name" not in in_dsn:
            kwargs["application_name"] = APPLICATION_NAME
        if not self.options.prepare_statements:
            kwargs["prepare_threshold"] = None  # pgbouncer in transaction mode: no server-side prepares
        return kwargs

    async def _configure(self, conn: Connection) -> None:
        await conn.execute(self._set_search_path)
        await conn.commit()

    async def connect(self, *, autocommit: bool = False) -> Connection:
        """A connection outside the pool (migrations, lock sessions): configured like our pooled ones,
        or made like the caller's pool makes its own."""
        if not self._owns_pool:
            return await self._connect_like_callers_pool(autocommit)
        kwargs = self.connection_kwargs()
        kwargs["autocommit"] = autocommit
        conn = await _OwnConnection.connect(self.options.dsn, **kwargs)
        try:
            await conn.execute(self._set_search_path)
            if not autocommit:
                await conn.commit()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _connect_like_callers_pool(self, autocommit: bool) -> Connection:
        pool = self._require_pool()
        conninfo: Any = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
        kwargs: Any = pool.kwargs() if callable(pool.kwargs) else pool.kwargs
        if inspect.isawaitable(conninfo):
            conninfo = await conninfo
        if inspect.isawaitable(kwargs):
            kwargs = await kwargs
        kwargs = {**(kwargs or {}), "autocommit": autocommit}
        conn: Connection = await pool.connection_class.connect(conninfo, **kwargs)
        return conn

    def _require_pool(self) -> Pool:
        if self._pool is None:
            raise StorageError("postgres: the driver is not open")
        return self._pool

    # ---- lifecycle -------------------------------------------------------------------------------

    async def open(self, *, migrate: bool = True) -> None:
        try:
            if self._owns_pool:
                # connect on our own first: a bad DSN or a refused connection then fails with the
                # server's own message instead of a pool timeout
                async with await self.connect() as conn:
                    if migrate:
                        self.migrated = await self._run_on(conn, plan=self._schema_plan)
                self._pool = await self._open_pool()
            else:
                if self._require_pool().closed:
                    raise ConfigError("the connection pool passed to kodestore must be open")
                if migrate:
                    self.migrated = await self.run(self._schema_plan, write=True)
        except _RunAgain as lost:
            raise self.translate_error(lost.error) from lost.error
        except psycopg.Error as exc:
            raise self.translate_error(exc) from exc

    async def _open_pool(self) -> Pool:
        options = self.options
        pool: Pool = AsyncConnectionPool(
            options.dsn,
            kwargs=self.connection_kwargs(),
            min_size=options.min_size,
            max_size=options.max_size,
            max_idle=options.idle_timeout_ms / 1000,
            timeout=self._timeout_s,
            configure=self._configure,
            connection_class=_OwnConnection,
            name=f"kodestore-{options.schema}",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self._timeout_s)
        except BaseException:
            await pool.close()
            raise
        return pool

    def _schema_plan(self) -> Plan[tuple[int, ...]]:
        """Create the schema if missing, then apply pending migrations, under the migration lock."""
        yield self.dialect.migration_lock()
        found = yield Stmt("SELECT 1 FROM pg_namespace WHERE nspname = ?", (self.options.schema,), "one")
        if found is None:  # checked first: CREATE SCHEMA needs a privilege even when the schema exists
            yield Stmt(self._create_schema)
        return (yield from migrate_plan(self.dialect, now_ms()))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        kept, self._kept = self._kept, None
        if pool is not None and kept is not None:
            await pool.putconn(kept[0])
        if pool is not None and self._owns_pool:
            await pool.close()

    # ---- plans -----------------------------------------------------------------------------------

    async def run(self, plan: PlanFactory[T], *, write: bool, light: bool = False) -> T:
        """One transaction; run again, on another connection, when the first one died before COMMIT.

        A connection can die between its checkout check and its first statement (a restart, a
        failover, ``pg_terminate_backend``). The server then rolls the transaction back, so nothing
        happened and the plan can start over; a death during COMMIT is not retried (its outcome is
        unknown) and surfaces as ``StorageError``."""
        return await self._on_a_connection(functools.partial(self._run_on, plan=plan))

    async def fetch(self, stmt: Stmt, *, write: bool = False) -> Any:
        """A read alone needs no BEGIN and COMMIT: on our autocommit connections, one round trip."""
        if write or not self._owns_pool:
            return await super().fetch(stmt, write=write)
        return await self._on_a_connection(functools.partial(_read_alone, stmt=stmt))

    async def _on_a_connection(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        """``work`` on a checked-out connection, again on another one when it raises ``_RunAgain``."""
        deadline = time.monotonic() + self._timeout_s
        for attempt in range(1, _PLAN_ATTEMPTS + 1):
            try:
                pool = self._require_pool()
                conn, since = await self._take_kept(pool)
                if conn is None:
                    self._checkouts += 1
                    try:
                        conn = await self._checkout(pool)
                    finally:
                        self._checkouts -= 1
                    since = time.monotonic()
                try:
                    result = await work(conn)
                except BaseException:
                    await pool.putconn(conn)
                    raise
                await self._keep_or_return(pool, conn, since)
                return result
            except _RunAgain as lost:
                if attempt == _PLAN_ATTEMPTS or time.monotonic() >= deadline:
                    raise self.translate_error(lost.error) from lost.error
            except psycopg.Error as exc:
                raise self.translate_error(exc) from exc
        raise AssertionError("the last attempt returns or raises")

    async def _take_kept(self, pool: Pool) -> tuple[Connection | None, float]:
        """The connection the previous plan left, and when it left the pool; ``(None, 0)`` when there
        is none, or it shows a sign of death, or it left the pool ``KEEP_CONNECTION_S`` ago or more
        (then it goes back).

        A store saving turn after turn so skips the pool's checkout and return (4% of a save's client
        instructions). Every connection still goes back within seconds, so the pool's own rules
        (lifetime, idle time, replacing broken connections) keep applying to it."""
        kept, self._kept = self._kept, None
        if kept is None:
            return None, 0.0
        conn, since = kept
        if time.monotonic() - since < KEEP_CONNECTION_S and _quiet(conn):
            return conn, since
        await pool.putconn(conn)
        return None, 0.0

    async def _keep_or_return(self, pool: Pool, conn: Connection, since: float) -> None:
        """Keep an idle connection of our own pool for the next plan (one at most); return any other,
        and any at all while another plan waits for the pool, which a kept connection would starve.
        A caller's pool gets each connection back at once: its size is the caller's to plan."""
        if (
            self._owns_pool
            and self._kept is None
            and not self._checkouts
            and self._pool is pool  # not closed meanwhile
            and conn.pgconn.transaction_status == TransactionStatus.IDLE
        ):
            self._kept = (conn, since)
        else:
            await pool.putconn(conn)

    async def _checkout(self, pool: Pool) -> Connection:
        """A pooled connection that just answered, within the connection timeout; the caller keeps
        it for the next plan or puts it back (``_keep_or_return``).

        The check is ours rather than the pool's ``check=``: psycopg_pool sleeps 1, 2, 4, ... s after
        each failed check, so after a restart a pool of dead connections would make the next call wait
        for seconds, or time out. Here each dead connection is dropped and the next one tried at once;
        once the idle ones are used up, the pool hands out fresh connections."""
        deadline = time.monotonic() + self._timeout_s
        while True:
            conn = await pool.getconn(timeout=max(deadline - time.monotonic(), 0.0))
            if _quiet(conn):
                return conn  # no round trip: nothing says it died
            try:
                await AsyncConnectionPool.check_connection(conn)
                return conn
            except psycopg.Error:
                await pool.putconn(conn)  # broken: the pool closes it and makes a replacement
                if time.monotonic() >= deadline:
                    raise
            except BaseException:
                await pool.putconn(conn)
                raise

    async def _run_on(self, conn: Connection, *, plan: PlanFactory[T]) -> T:
        steps = plan()
        try:
            stmt = next(steps)
        except StopIteration as nothing_to_run:
            return nothing_to_run.value  # type: ignore[no-any-return]
        try:
            if isinstance(stmt, Batch) and stmt.guarded and self._owns_pool and conn.autocommit:
                return await self._run_guarded(conn, stmt, steps)
            return await self._run_in_transaction(conn, stmt, steps)
        finally:
            steps.close()

    async def _run_guarded(self, conn: Connection, batch: Batch, steps: Plan[T]) -> T:
        """A guarded batch that ends its plan, in one round trip: on our autocommit connections, the
        statements of one pipeline form one implicit transaction, committed at its end, undone whole
        if one fails. A guard followed by writes raises on the server when it matches nothing, undoing them
        (a lone guard writes nothing either way).

        Safe to send again when the connection dies on the way (the outcome unknown): a save that
        did commit changed the version tokens, so its guard fails the second time."""
        guard, *writes = batch.stmts
        # a lone guard is a statement of its own; with writes, one statement of CTEs when they fit
        single = _one_statement(guard, writes) if writes else guard
        try:
            if single is not None:
                results = [await _read_alone_on(conn, single), *[None] * len(writes)]
            else:
                guard = Stmt(f"WITH guard AS ({guard.sql}) {_EXPECT_ROW}", guard.params, "one")
                results = await _execute_batch(conn, Batch((guard, *writes)), own_connection=True)
        except psycopg.Error as exc:
            if exc.sqlstate == _STALE_SQLSTATE:
                results = [None] * len(batch.stmts)
            elif conn.broken:
                raise _RunAgain(exc) from exc
            else:
                raise
        try:
            steps.send(results)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        raise AssertionError("a guarded batch must end its plan")

    async def _run_in_transaction(self, conn: Connection, stmt: Stmt | Batch, steps: Plan[T]) -> T:
        committing = False
        try:
            async with conn.transaction(), _plan_cursor(conn) as cursor:
                if not self._owns_pool:
                    # a caller's connection keeps its own settings: ours last for this transaction only
                    install_text_codec(cursor.adapters)
                    await cursor.execute(self._set_local_search_path)
                while True:
                    if isinstance(stmt, Batch):
                        result = await _execute_batch(conn, stmt, self._owns_pool)
                    else:
                        result = await _execute(cursor, stmt)
                    try:
                        stmt = steps.send(result)
                    except StopIteration as done:
                        committing = True  # leaving the block commits
                        value: T = done.value
                        return value
        except psycopg.Error as exc:
            if conn.broken and not committing:
                raise _RunAgain(exc) from exc
            raise

    async def ping(self) -> None:
        """Answer within the connection timeout, even when the server stopped answering mid-connection.

        The query runs in its own task that is abandoned, not awaited, on timeout: cancelling a query
        makes psycopg ask the (silent) server to cancel it, which can itself take seconds."""
        query = asyncio.ensure_future(self.run(_ping_plan, write=False))
        try:
            done, _ = await asyncio.wait({query}, timeout=self._timeout_s)
        finally:
            if not query.done():
                query.cancel()
                self._abandoned.add(query)
                query.add_done_callback(_forget_abandoned(self._abandoned))
        if not done:
            raise StorageError(f"postgres: no answer within {self.options.connection_timeout_ms} ms")
        query.result()

    async def size_bytes(self) -> int:
        def plan() -> Generator[Stmt, Any, Any]:
            return (
                yield Stmt(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = ? AND c.relkind IN ('r', 'p', 'm')",
                    (self.options.schema,),
                    "one",
                )
            )

        row = await self.run(plan, write=False)
        return int(row[0])

    async def schema_status(self) -> SchemaStatus:
        """Applied and pending migrations; read-only (``kodestore init --check`` opens with
        ``migrate=False``)."""

        def plan() -> Plan[SchemaStatus]:
            return (yield from status_plan(self.dialect))

        return await self.run(plan, write=False)


def _quiet(conn: Connection) -> bool:
    """True when an idle pooled connection shows no sign of death, checked without a round trip.

    A backend that is terminated, or a server that shuts down or crashes, sends an error and closes
    the socket, which makes it readable; a healthy idle connection has nothing to read. Anything
    else (a notice, a closed or busy connection) gets the full check."""
    pgconn = conn.pgconn
    if pgconn.status != ConnStatus.OK or pgconn.transaction_status != TransactionStatus.IDLE:
        return False
    try:
        if isinstance(conn, _OwnConnection):
            return not conn.socket_poller().poll(0)
        readable, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


async def _execute_batch(conn: Connection, batch: Batch, own_connection: bool) -> list[Any]:
    """Every statement of ``batch`` sent in one pipeline: one round trip, then each result."""
    cursors = []
    async with conn.pipeline():
        for stmt in batch.stmts:
            cursor = conn.cursor()
            if not own_connection:
                install_text_codec(cursor.adapters)  # as in ``_run_on``: a caller's connection
            if stmt.many:
                await cursor.executemany(render(stmt.sql), stmt.params)
            else:
                await cursor.execute(render(stmt.sql), stmt.params)
            cursors.append(cursor)
    results: list[Any] = []
    for cursor, stmt in zip(cursors, batch.stmts, strict=True):
        if stmt.fetch == "one":
            results.append(await cursor.fetchone())
        elif stmt.fetch == "all":
            results.append(await cursor.fetchall())
        else:
            results.append(None)
        await cursor.close()
    return results


_VALUES = re.compile(r"VALUES \((\?(?:, \?)*)\)")
_MAX_PARAMS = 32_767  # well below the protocol's 65,535 parameters per statement


def _multi_row(sql_text: str, rows: int) -> str | None:
    """``INSERT ... VALUES (?, ...) ...`` with ``rows`` rows of values; ``None`` for other statements."""
    match = _VALUES.search(sql_text)
    if match is None or not sql_text.startswith("INSERT "):
        return None
    values = ", ".join([f"({match.group(1)})"] * rows)
    return f"{sql_text[: match.start()]}VALUES {values}{sql_text[match.end() :]}"


def _one_statement(guard: Stmt, writes: list[Stmt]) -> Stmt | None:
    """The guard and the writes as one statement of data-modifying CTEs, when they fit in one:
    one parse, bind and execute on the server, and one result for psycopg, where a pipeline of
    three statements costs the client about as much again. The CTEs run on one snapshot and touch
    disjoint rows; the guard's count still aborts the whole statement when it matched nothing."""
    shapes = tuple((write.sql, len(write.params) if write.many else None) for write in writes)
    text = _one_statement_sql(guard.sql, shapes)
    if text is None:
        return None
    params: list[Any] = list(guard.params)
    for write in writes:
        if write.many:
            for row in write.params:
                params.extend(row)
        else:
            params.extend(write.params)
    return None if len(params) > _MAX_PARAMS else Stmt(text, params, "one")


@lru_cache(maxsize=256)
def _one_statement_sql(guard: str, writes: tuple[tuple[str, int | None], ...]) -> str | None:
    """The text of ``_one_statement`` for a guard and writes of these texts and row counts (``None``:
    a single statement); ``None`` when a write cannot be one CTE."""
    parts = [f"guard AS ({guard})"]
    for index, (text, rows) in enumerate(writes):
        if rows is not None:
            multi = _multi_row(text, rows) if rows else None
            if multi is None:
                return None
            text = multi
        parts.append(f"w{index} AS ({text})")
    return f"WITH {', '.join(parts)} {_EXPECT_ROW}"


def _plan_cursor(conn: Connection) -> AbstractAsyncContextManager[AsyncCursor[TupleRow]]:
    """A cursor for a plan's statements: the one our own connections keep, or a new one on a
    caller's connection (closed after the plan)."""
    if isinstance(conn, _OwnConnection):
        return nullcontext(conn.statement_cursor())
    return conn.cursor()


async def _read_alone_on(conn: Connection, stmt: Stmt) -> Any:
    if isinstance(conn, _OwnConnection):  # the common case, without a context manager
        return await _execute(conn.statement_cursor(), stmt)
    async with conn.cursor() as cursor:
        return await _execute(cursor, stmt)


async def _read_alone(conn: Connection, *, stmt: Stmt) -> Any:
    """One read statement, its own transaction on an autocommit connection: safe to run again."""
    try:
        return await _read_alone_on(conn, stmt)
    except psycopg.Error as exc:
        if conn.broken:
            raise _RunAgain(exc) from exc
        raise


async def _execute(cursor: AsyncCursor[TupleRow], stmt: Stmt) -> Any:
    # statements come from the shared plans and the dialect, never from user input
    if stmt.many:
        await cursor.executemany(render(stmt.sql), stmt.params)  # pipelined by psycopg
        return None
    if stmt.params:
        await cursor.execute(render(stmt.sql), stmt.params)
    else:
        await cursor.execute(stmt.sql)  # no parameters: psycopg leaves ``%`` and ``?`` alone
    if stmt.fetch == "one":
        return await cursor.fetchone()
    if stmt.fetch == "all":
        return await cursor.fetchall()
    return None
