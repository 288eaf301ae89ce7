"""Postgres test environment: the server to use, fresh schemas, and stores opened on them.

``make_test_postgres_store`` / ``drop_schema`` are what ``tests/conftest.py`` can share. Every test gets
its own random schema, dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest

TEST_DSN = os.environ.get("KODESTORE_TEST_DSN", "postgresql://root@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO_ROOT = Path(__file__).resolve().parents[2]


@cache
def postgres_unavailable() -> str | None:
    """Why the Postgres tests cannot run here, or None when they can (checked once per session)."""
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


def require_postgres() -> str:
    """The test DSN; skips the test without a server, but fails it under ``CI=true``."""
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: Postgres tests must run in CI")
        pytest.skip(reason)
    return TEST_DSN


def new_schema() -> str:
    return f"ks_test_{uuid.uuid4().hex[:16]}"


async def make_test_postgres_store(tmp_path: Path, **kwargs: Any) -> Any:
    """An open ``PostgresStore`` on a fresh schema of the test server; ``store.schema`` names it.

    ``kwargs`` go to ``PostgresStore`` (e.g. ``options=``, ``schema=``); files live under ``tmp_path``.
    """
    dsn = require_postgres()
    from kodestore.db.postgres import PostgresStore

    if "options" not in kwargs and "pool" not in kwargs:
        kwargs.setdefault("dsn", dsn)
        kwargs.setdefault("schema", new_schema())
    store = PostgresStore(file_store_base_dir=tmp_path / "files", **kwargs)
    return await store.open()


async def drop_schema(dsn: str, schema: str) -> None:
    """Remove a test schema and everything in it (no error if it is already gone)."""
    await admin(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def admin(dsn: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on a plain autocommit connection, outside any store; returns its rows."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


@asynccontextmanager
async def postgres_store(tmp_path: Path, **kwargs: Any) -> AsyncIterator[Any]:
    """``make_test_postgres_store``, closed and its schema dropped on exit."""
    store = await make_test_postgres_store(tmp_path, **kwargs)
    try:
        yield store
    finally:
        await store.close()
        await drop_schema(TEST_DSN, store.schema)


def subprocess_env() -> dict[str, str]:
    """The environment for helper processes: this checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env
