"""Several processes on one Postgres schema: concurrent migrations and advisory agent locks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.pg_env import (
    REPO_ROOT,
    admin,
    drop_schema,
    make_test_postgres_store,
    new_schema,
    postgres_store,
    require_postgres,
    subprocess_env,
)

from kodestore.db.migrations import load_migrations
from kodestore.errors import LockTimeout

pytestmark = pytest.mark.postgres

WORKER = str(REPO_ROOT / "tests" / "helpers" / "pg_worker.py")
MIGRATION_WORKERS = 8


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Any]:
    async with postgres_store(tmp_path) as store:
        yield store


@asynccontextmanager
async def _second_store(tmp_path: Path, schema: str) -> AsyncIterator[Any]:
    """Another store (another lock session) on the same schema, as another process would have."""
    store = await make_test_postgres_store(tmp_path / "second", schema=schema)
    try:
        yield store
    finally:
        await store.close()


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.asyncio
async def test_workers_migrating_an_empty_schema_at_once_all_succeed(tmp_path: Path) -> None:
    dsn, schema = require_postgres(), new_schema()
    start_at = str(time.time() + 2.0)  # after every interpreter has started and imported kodestore
    workers = [
        _worker("migrate", dsn, schema, str(tmp_path / f"w{n}"), start_at) for n in range(MIGRATION_WORKERS)
    ]
    try:
        outputs = [await asyncio.to_thread(worker.communicate, timeout=60) for worker in workers]
        for worker, (_, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr
        applied = [json.loads(stdout)["migrated"] for stdout, _ in outputs]
        versions = [m.version for m in load_migrations("postgres")]
        assert sorted(applied, key=len) == [[]] * (MIGRATION_WORKERS - 1) + [versions]  # exactly one migrated
        rows = await admin(dsn, f'SELECT version FROM "{schema}".kodestore_migrations ORDER BY version')
        assert [version for (version,) in rows] == versions
    finally:
        for worker in workers:
            worker.kill()
        await drop_schema(dsn, schema)


@pytest.mark.asyncio
async def test_advisory_lock_excludes_other_processes_and_dies_with_its_holder(
    pg: Any, tmp_path: Path
) -> None:
    holder = _worker("hold-lock", require_postgres(), pg.schema, str(tmp_path / "holder"), "agent-1")
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 30)
        assert line.strip() == "locked", holder.stderr.read() if holder.stderr else ""

        with pytest.raises(LockTimeout):
            await pg.acquire_agent_lock("agent-1", timeout_ms=300)
        async with pg.agent_lock("agent-2", timeout_ms=300):  # other agents are not blocked
            pass

        os.kill(holder.pid, signal.SIGKILL)
        started = time.monotonic()
        release = await pg.acquire_agent_lock("agent-1", timeout_ms=10_000)
        assert time.monotonic() - started < 3.0
        await release()
    finally:
        holder.kill()
        holder.communicate()


@pytest.mark.asyncio
async def test_lock_is_not_reentrant_and_excludes_another_store(pg: Any, tmp_path: Path) -> None:
    release = await pg.acquire_agent_lock("a", timeout_ms=100)
    with pytest.raises(LockTimeout):
        await pg.acquire_agent_lock("a", timeout_ms=100)  # same store, same session: still waits
    async with _second_store(tmp_path, pg.schema) as other:
        with pytest.raises(LockTimeout):
            await other.acquire_agent_lock("a", timeout_ms=100)
        waiter = asyncio.ensure_future(other.acquire_agent_lock("a", timeout_ms=5_000))
        await asyncio.sleep(0.1)
        await release()
        await release()  # releasing twice is harmless
        release_other = await asyncio.wait_for(waiter, 5)
        with pytest.raises(LockTimeout):
            await pg.acquire_agent_lock("a", timeout_ms=100)
        await release_other()
    async with pg.agent_lock("a", timeout_ms=100):
        pass


@pytest.mark.asyncio
async def test_locks_are_per_schema(pg: Any, tmp_path: Path) -> None:
    async with (
        pg.agent_lock("a", timeout_ms=100),
        postgres_store(tmp_path / "other") as other,
        other.agent_lock("a", timeout_ms=100),  # same agent id, another schema
    ):
        pass


@pytest.mark.asyncio
async def test_cancelled_waiter_leaves_no_lock_behind(pg: Any, tmp_path: Path) -> None:
    async with _second_store(tmp_path, pg.schema) as other:
        release = await pg.acquire_agent_lock("a", timeout_ms=100)
        waiter = asyncio.ensure_future(other.acquire_agent_lock("a", timeout_ms=5_000))
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await release()
        async with pg.agent_lock("a", timeout_ms=100):
            pass
        for _ in range(50):  # a cancelled attempt that did get the lock gives it back by itself
            release = await other.acquire_agent_lock("b", timeout_ms=1000)
            attempt = asyncio.ensure_future(other.acquire_agent_lock("c", timeout_ms=1000))
            await asyncio.sleep(0)
            attempt.cancel()
            await release()
        await asyncio.sleep(0.2)
        async with pg.agent_lock("b", timeout_ms=1000), pg.agent_lock("c", timeout_ms=1000):
            pass


@pytest.mark.asyncio
async def test_close_frees_every_lock_still_held(pg: Any, tmp_path: Path) -> None:
    async with _second_store(tmp_path, pg.schema) as other:
        await other.acquire_agent_lock("a", timeout_ms=100)
        await other.acquire_agent_lock("b", timeout_ms=100)
    async with pg.agent_lock("a", timeout_ms=100), pg.agent_lock("b", timeout_ms=100):
        pass
