"""The ``store`` fixture: every contract test runs once per backend.

Postgres runs against the real server named by ``KODESTORE_TEST_DSN`` (default: the local one), each
test in a fresh schema. Without a reachable server the Postgres cases skip with the reason — except
under ``CI=true``, where a skip would hide a failure, so they fail instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("kodestore.testing")

from helpers.pg_env import (  # noqa: E402
    IN_CI,
    TEST_DSN,
    drop_schema,
    make_test_postgres_store,
    postgres_unavailable,
    require_postgres,
)

from kodestore import JSONStore, MemoryStore, SqliteStore  # noqa: E402

__all__ = ["IN_CI", "TEST_DSN", "drop_test_schema", "make_store", "postgres_unavailable", "require_postgres"]

BACKENDS = ["memory", "sqlite", "postgres"]


async def make_store(backend: str, tmp_path: Path) -> Any:
    """An open store of ``backend``; Postgres ones get a fresh schema (``store.schema``)."""
    if backend == "memory":
        return await MemoryStore().open()
    if backend == "sqlite":
        return await SqliteStore(tmp_path / "db" / "agents.db", tmp_path / "files").open()
    if backend == "json":
        return await JSONStore(tmp_path / "files").open()
    return await make_test_postgres_store(tmp_path)


async def drop_test_schema(store: Any) -> None:
    schema = getattr(store, "schema", None)  # only Postgres stores have one
    if isinstance(schema, str):
        await drop_schema(TEST_DSN, schema)


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
