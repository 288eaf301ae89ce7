"""Postgres under faults: killed connections, an unreachable or silent server, failed and cancelled saves."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers.pg_env import admin, new_schema, postgres_store, require_postgres
from helpers.pg_proxy import PostgresProxy
from psycopg.conninfo import make_conninfo

import kodestore
from kodestore.config import PostgresOptions
from kodestore.db.base import Stmt
from kodestore.db.postgres import PostgresStore
from kodestore.errors import KodeStoreError, LockLost, StorageError
from kodestore.models import Message
from kodestore.testing import sample_info, sample_message

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Any]:
    async with postgres_store(tmp_path) as store:
        yield store


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- connections the server killed ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_killed_connections_are_replaced(tmp_path: Path) -> None:
    dsn = require_postgres()
    app = f"ks-kill-{uuid.uuid4().hex[:8]}"
    options = PostgresOptions(dsn=make_conninfo(dsn, application_name=app), schema=new_schema(), min_size=3)
    async with postgres_store(tmp_path, options=options) as store:
        await store.save_info("a", sample_info("a"))
        await asyncio.gather(*(store.load_info("a") for _ in range(6)))  # several pooled connections
        release = await store.acquire_agent_lock("a", timeout_ms=100)  # and the lock session

        killed = await admin(
            dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        assert len(killed) >= 3 and all(ok for (ok,) in killed)

        started = time.monotonic()
        assert await store.load_info("a") == sample_info("a")  # the very next call succeeds, at once
        assert time.monotonic() - started < 1.0
        await store.save_messages("a", [sample_message(0)])
        assert (await store.health_check()).healthy
        with pytest.raises(LockLost):  # its session died with the lock: the holder is told
            await release()
        async with store.agent_lock("a", timeout_ms=100):  # a new lock session
            pass


@pytest.mark.asyncio
async def test_a_plan_whose_connection_dies_before_commit_runs_again(pg: Any) -> None:
    await admin(require_postgres(), f'CREATE TABLE "{pg.schema}".attempts (n int)')
    attempts = 0

    def plan(kill_on: set[int]) -> Any:
        nonlocal attempts
        attempts += 1
        yield Stmt("INSERT INTO attempts (n) VALUES (?)", (attempts,))
        if attempts in kill_on:  # the server ends the session mid-transaction
            yield Stmt("SELECT pg_terminate_backend(pg_backend_pid())")
        return attempts

    assert await pg.driver.run(lambda: plan({1}), write=True) == 2
    rows = await admin(require_postgres(), f'SELECT n FROM "{pg.schema}".attempts')
    assert rows == [(2,)]  # the first attempt was rolled back with its session

    attempts = 0
    with pytest.raises(StorageError):
        await pg.driver.run(lambda: plan({1, 2, 3, 4}), write=True)
    assert attempts == 3  # bounded
    attempts = 0
    with pytest.raises(KodeStoreError, match="UndefinedTable"):
        await pg.driver.run(lambda: (yield Stmt("SELECT * FROM missing", (), "one")), write=False)


# ---- an unreachable server -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_opening_an_unreachable_store_fails_without_the_password(tmp_path: Path) -> None:
    dsn = f"postgresql://root:s3cret@127.0.0.1:{_closed_port()}/test"
    store = PostgresStore(dsn, tmp_path / "files", schema="ks_unreachable")
    assert "s3cret" not in repr(store)
    started = time.monotonic()
    with pytest.raises(KodeStoreError) as caught:
        await store.open()
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, StorageError)
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(caught.value)
    assert "s3cret" not in repr(store)

    with pytest.raises(StorageError) as again:  # the factory's path: same error, same care
        await kodestore.create_extended_store(
            type="postgres",
            dsn=dsn,
            file_store_base_dir=str(tmp_path / "f2"),
            connection={"connection_timeout_ms": 1000},
        )
    assert "s3cret" not in str(again.value)


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[tuple[Any, PostgresProxy]]:
    proxy = await PostgresProxy(require_postgres()).start()
    options = PostgresOptions(dsn=proxy.dsn, schema=new_schema(), connection_timeout_ms=1000)
    try:
        async with postgres_store(tmp_path, options=options) as store:
            yield store, proxy
            await proxy.refuse()  # lets the store close without waiting on silent sockets
    finally:
        await proxy.refuse()


@pytest.mark.asyncio
@pytest.mark.parametrize("outage", ["refused", "silent"])
async def test_health_check_reports_an_outage_within_the_connection_timeout(
    proxied: tuple[Any, PostgresProxy], outage: str
) -> None:
    store, proxy = proxied
    assert (await store.health_check()).healthy
    if outage == "refused":
        await proxy.refuse()
    else:
        proxy.go_silent()
    started = time.monotonic()
    health = await store.health_check()
    elapsed = time.monotonic() - started
    assert not health.healthy and not health.database.connected
    assert health.database.error and "StorageError" in health.database.error
    assert elapsed < 1.8, f"health_check took {elapsed:.2f} s with a 1 s connection timeout"


# ---- a history replace is one transaction --------------------------------------------------------


async def _install_trap(schema: str, when_text: str, action: str) -> None:
    """A trigger that runs ``action`` when a message holding ``when_text`` is written."""
    dsn = require_postgres()
    await admin(
        dsn,
        f'CREATE FUNCTION "{schema}".trap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN'
        f' IF NEW.content @> \'[{{"text": "{when_text}"}}]\' THEN {action}; END IF;'
        " RETURN NEW; END $$",
    )
    await admin(
        dsn,
        f'CREATE TRIGGER trap BEFORE INSERT OR UPDATE ON "{schema}".messages'
        f' FOR EACH ROW EXECUTE FUNCTION "{schema}".trap()',
    )


def _history(*texts: str) -> list[Message]:
    return [sample_message(i, text=text) for i, text in enumerate(texts)]


@pytest.mark.asyncio
async def test_a_failed_history_replace_keeps_the_previous_history(pg: Any) -> None:
    await pg.save_info("a", sample_info("a"))
    before = _history("one", "two", "three")
    await pg.save_messages("a", before)
    await _install_trap(pg.schema, "boom", "RAISE EXCEPTION 'refused by the database'")

    # the first rows are written before the database refuses the third
    with pytest.raises(KodeStoreError, match="refused by the database"):
        await pg.save_messages("a", _history("one changed", "two changed", "boom", "four"))
    assert await pg.load_messages("a") == before
    assert (await pg.load_info("a")).message_count == 3

    after = _history("one", "two changed")
    await pg.save_messages("a", after)  # the writer's cache was not fooled by the failed attempt
    assert await pg.load_messages("a") == after


@pytest.mark.asyncio
async def test_a_cancelled_history_replace_keeps_the_previous_history(tmp_path: Path) -> None:
    dsn = require_postgres()
    app = f"ks-cancel-{uuid.uuid4().hex[:8]}"
    options = PostgresOptions(dsn=make_conninfo(dsn, application_name=app), schema=new_schema())
    async with postgres_store(tmp_path, options=options) as pg:
        await pg.save_info("a", sample_info("a"))
        before = _history("one", "two")
        await pg.save_messages("a", before)
        await _install_trap(pg.schema, "slow", "PERFORM pg_sleep(30)")

        save = asyncio.ensure_future(pg.save_messages("a", _history("one changed", "slow", "three")))
        for _ in range(250):  # until the server is inside the transaction, sleeping in the trigger
            query = "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event = 'PgSleep'"
            if await admin(dsn, query, (app,)):
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the save never reached the trigger")
        save.cancel()
        with pytest.raises(asyncio.CancelledError):
            await save

        assert await pg.load_messages("a") == before
        after = _history("one", "two", "three")
        await pg.save_messages("a", after)
        assert await pg.load_messages("a") == after
