"""``kodestore init --check``: is the schema current? Reads only; creates nothing."""

from __future__ import annotations

import os

from kodestore.config import StoreOptions
from kodestore.db.base import SqlDriver
from kodestore.db.migrations import SchemaStatus, load_migrations
from kodestore.db.sqlite import SqliteDriver
from kodestore.errors import ConfigError


async def schema_status(options: StoreOptions) -> SchemaStatus:
    driver: SqlDriver
    if options.type == "sqlite":
        if not os.path.exists(options.db_path):
            return SchemaStatus(applied=(), pending=tuple(m.version for m in load_migrations("sqlite")))
        driver = SqliteDriver(options.db_path)
    elif options.type == "postgres":
        from kodestore.db.postgres import PostgresDriver

        assert options.postgres is not None
        driver = PostgresDriver(options.postgres)
    else:
        raise ConfigError(f"store type {options.type!r} has no schema")
    await driver.open(migrate=False)
    try:
        return await driver.schema_status()
    finally:
        await driver.close()
