"""A separate process for the Postgres multi-process tests.

Usage:
  pg_worker.py migrate DSN SCHEMA FILES_DIR START_AT   open a store at wall-clock START_AT, print the
                                                      migrations it applied as JSON, close
  pg_worker.py hold-lock DSN SCHEMA FILES_DIR AGENT_ID take the agent lock, print "locked", then wait
                                                      until killed
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from kodestore.db.postgres import PostgresStore


async def migrate(dsn: str, schema: str, files_dir: str, start_at: float) -> None:
    await asyncio.sleep(max(0.0, start_at - time.time()))  # every worker starts at the same instant
    async with PostgresStore(dsn, files_dir, schema=schema) as store:
        print(json.dumps({"migrated": list(store.driver.migrated)}), flush=True)


async def hold_lock(dsn: str, schema: str, files_dir: str, agent_id: str) -> None:
    async with PostgresStore(dsn, files_dir, schema=schema) as store:
        await store.acquire_agent_lock(agent_id, timeout_ms=10_000)
        print("locked", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    command, dsn, schema, files_dir, last = sys.argv[1:6]
    if command == "migrate":
        asyncio.run(migrate(dsn, schema, files_dir, float(last)))
    elif command == "hold-lock":
        asyncio.run(hold_lock(dsn, schema, files_dir, last))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
