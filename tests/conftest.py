"""The ``store`` fixture: every contract test runs once per backend.

Postgres runs against the real server named by ``KODESTORE_TEST_DSN`` (default: the local one), each
test in a fresh schema. Without a reachable server the Postgres cases skip with the reason — except
under ``CI=true``, where a skip would hide a failure, so they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("kodestore.testing")

from kodestore import JSONStore, MemoryStore, SqliteStore  # noqa: E402

TEST_DSN = os.environ.get("KODESTORE_TEST_DSN", "postgresql://root@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ["memory", "sqlite", "postgres"]


def postgres_unavailable() -> str | None:
    """Why Postgres tests cannot run here, or None when they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'kodestore[postgres]')"
    try:
        with psycopg.connect(TEST_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL server at KODESTORE_TEST_DSN ({type(exc).__name__})"
    return None


def require_postgres() -> None:
    reason = postgres_unavailable()
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: Postgres tests must run in CI")
    pytest.skip(reason)


async def make_store(backend: str, tmp_path: Path) -> Any:
    if backend == "memory":
        return await MemoryStore().open()
    if backend == "sqlite":
        return await SqliteStore(tmp_path / "db" / "agents.db", tmp_path / "files").open()
    if backend == "json":
        return await JSONStore(tmp_path / "files").open()
    require_postgres()
    from kodestore import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:16]}"
    store = PostgresStore(dsn=TEST_DSN, file_store_base_dir=str(tmp_path / "files"), schema=schema)
    await store.open()
    store.test_schema = schema
    return store


async def drop_test_schema(store: Any) -> None:
    schema = getattr(store, "test_schema", None)
    if schema is None:
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(TEST_DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _open_and_clean(backend: str, tmp_path: Path) -> AsyncIterator[Any]:
    opened = await make_store(backend, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
        await drop_test_schema(opened)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """An open extended store: memory, sqlite, postgres."""
    async for opened in _open_and_clean(request.param, tmp_path):
        yield opened


@pytest.fixture(params=[*BACKENDS, "json"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Any store, the files-only JSONStore included (the plain Store contract)."""
    async for opened in _open_and_clean(request.param, tmp_path):
        yield opened
