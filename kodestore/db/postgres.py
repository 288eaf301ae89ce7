"""``PostgresStore``: the shared ``ExtendedStore`` over Postgres, with JSONL files for the runtime half.

Importing this module imports psycopg; ``kodestore`` itself only does so when a Postgres store is made.
The backend lives in ``pg_text`` (NUL-safe text), ``pg_dialect``, ``pg_driver`` and ``pg_lock``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kodestore.config import DEFAULT_STORE_PATH, Durability, PostgresOptions, resolve_options
from kodestore.db.pg_dialect import PostgresDialect
from kodestore.db.pg_driver import PostgresDriver
from kodestore.db.pg_lock import AdvisoryAgentLocker
from kodestore.db.records import SqlRecords
from kodestore.errors import ConfigError
from kodestore.extended import ExtendedStore
from kodestore.files.disk import DiskFiles

__all__ = ["AdvisoryAgentLocker", "PostgresDialect", "PostgresDriver", "PostgresStore"]


def _options(dsn: str | None, schema: str, pool: Any) -> PostgresOptions:
    """Options from the constructor's arguments, validated like the factory's (the environment fills
    in a missing DSN, as it does for ``create_store``)."""
    if dsn is None and pool is not None:
        dsn = pool.conninfo if isinstance(pool.conninfo, str) else ""
    given: dict[str, Any] = {"type": "postgres", "schema": schema, "pool": pool}
    if dsn is not None:
        given["dsn"] = dsn
    resolved = resolve_options(given, None if dsn is None else {}).postgres
    assert resolved is not None
    return resolved


class PostgresStore(ExtendedStore):
    """Postgres for queryable data (agents, messages, tool calls, snapshots), JSONL files for events.

    ``PostgresStore("postgresql://...")``, or ``options=PostgresOptions(...)`` (the factory's form), or
    ``pool=`` an open ``AsyncConnectionPool`` that the caller keeps and closes.
    """

    def __init__(
        self,
        dsn: str | None = None,
        file_store_base_dir: str | os.PathLike[str] = DEFAULT_STORE_PATH,
        *,
        options: PostgresOptions | None = None,
        schema: str = "public",
        pool: Any = None,
        durability: Durability = "os",
    ) -> None:
        if options is None:
            options = _options(dsn, schema, pool)
        elif dsn is not None or pool is not None or schema != "public":
            raise ConfigError("pass either options= or dsn/schema/pool, not both")
        self.options = options
        self.schema = options.schema
        self.file_store_base_dir = Path(file_store_base_dir)
        driver = PostgresDriver(options)
        super().__init__(
            SqlRecords(driver),
            DiskFiles(self.file_store_base_dir, durability),
            AdvisoryAgentLocker(driver),
        )
        self.driver = driver
