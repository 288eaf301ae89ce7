"""Throughput of backup, restore and migrate on a simulated store (default: 1,000 agents).

    PYTHONPATH=. python scripts/bench_ops.py [--agents 1000] [--turns 6] [--dsn postgresql://...]

Fills a SQLite store with ``kodestore.demo.simulate`` (per agent and turn: 2 messages, 1 tool call,
5 events), then times each operation. MB/s is the logical data volume (the size of the backup's JSON
lines) over the wall time, so every row is measured against the same amount of data. Postgres rows
run when ``--dsn`` (or ``KODESTORE_TEST_DSN``) reaches a server; each uses a throwaway schema.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kodestore import SqliteStore, ops
from kodestore.demo import simulate
from kodestore.facade import Store


async def _timed(label: str, agents: int, volume: int, run: Callable[[], Awaitable[Any]]) -> None:
    started = time.perf_counter()
    await run()
    seconds = time.perf_counter() - started
    mb = volume / 1e6
    print(f"{label:<28} {seconds:8.2f} s {agents / seconds:10.0f} agents/s {mb / seconds:8.2f} MB/s")


async def _postgres(dsn: str, files: Path) -> Store | None:
    try:
        from kodestore import PostgresStore
    except ImportError:
        return None
    store: Store = PostgresStore(dsn, files, schema=f"bench_{uuid.uuid4().hex[:12]}")
    try:
        await store.open()
    except Exception as exc:  # no server: skip the Postgres rows, say why
        print(f"(postgres rows skipped: {type(exc).__name__}: {exc})")
        return None
    return store


async def _drop_schema(dsn: str, store: Any) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{store.schema}" CASCADE')


async def main(agents: int, turns: int, dsn: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kodestore-bench-") as tmp:
        base = Path(tmp)
        source = await SqliteStore(base / "src" / "agents.db", base / "src" / "files").open()
        started = time.perf_counter()
        await simulate(source, agents=agents, turns=turns)
        print(f"filled {agents} agents x {turns} turns in {time.perf_counter() - started:.1f} s")
        manifest = await ops.backup(source, base / "warm")  # warm the page cache, learn the volume
        volume = sum(int(f["size"]) for f in manifest["files"].values())
        print(f"data volume: {volume / 1e6:.1f} MB as JSON lines ({manifest['counts']})\n")

        await _timed("backup sqlite", agents, volume, lambda: ops.backup(source, base / "bk-sqlite"))
        target = await SqliteStore(base / "r" / "agents.db", base / "r" / "files").open()
        await _timed(
            "restore -> sqlite", agents, volume, lambda: ops.restore_into(base / "bk-sqlite", target)
        )
        await target.close()
        target = await SqliteStore(base / "m" / "agents.db", base / "m" / "files").open()
        await _timed("migrate sqlite -> sqlite", agents, volume, lambda: ops.migrate(source, target))
        await _timed("migrate again (no-op)", agents, volume, lambda: ops.migrate(source, target))
        await target.close()

        postgres = await _postgres(dsn, base / "pg-files")
        if postgres is not None:
            try:
                await _timed(
                    "migrate sqlite -> postgres", agents, volume, lambda: ops.migrate(source, postgres)
                )
                await _timed("backup postgres", agents, volume, lambda: ops.backup(postgres, base / "bk-pg"))
                back = await SqliteStore(base / "b" / "agents.db", base / "b" / "files").open()
                await _timed(
                    "migrate postgres -> sqlite", agents, volume, lambda: ops.migrate(postgres, back)
                )
                await back.close()
            finally:
                await postgres.close()
                await _drop_schema(dsn, postgres)
        await source.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument(
        "--dsn", default=os.environ.get("KODESTORE_TEST_DSN", "postgresql://root@127.0.0.1:5432/test")
    )
    options = parser.parse_args()
    asyncio.run(main(options.agents, options.turns, options.dsn))
