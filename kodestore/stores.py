"""The concrete stores: each is the shared facade plus its record backend, runtime files and lock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kodestore.config import DEFAULT_SQLITE_PATH, DEFAULT_STORE_PATH, Durability
from kodestore.db.records import SqlRecords
from kodestore.db.sqlite import SqliteDriver
from kodestore.extended import ExtendedStore
from kodestore.facade import Store
from kodestore.files.disk import DiskFiles
from kodestore.files.json_records import JsonRecords
from kodestore.files.memory import MemoryFiles
from kodestore.locks import FileAgentLocker, LocalAgentLocker

if TYPE_CHECKING:
    from kodestore.config import PostgresOptions


class SqliteStore(ExtendedStore):
    """Embedded default: SQLite for queryable data, JSONL files for events and history."""

    def __init__(
        self,
        db_path: str | os.PathLike[str] = DEFAULT_SQLITE_PATH,
        file_store_base_dir: str | os.PathLike[str] = DEFAULT_STORE_PATH,
        *,
        durability: Durability = "os",
    ) -> None:
        self.db_path = Path(db_path)
        self.file_store_base_dir = Path(file_store_base_dir)
        super().__init__(
            SqlRecords(SqliteDriver(self.db_path, durability)),
            DiskFiles(self.file_store_base_dir, durability),
            FileAgentLocker(self.db_path.parent / f"{self.db_path.name}.locks"),
        )


class MemoryStore(ExtendedStore):
    """Everything in this process's memory (SQLite ``:memory:`` for the queryable part); for tests."""

    def __init__(self) -> None:
        super().__init__(SqlRecords(SqliteDriver(":memory:")), MemoryFiles(), LocalAgentLocker())


class JSONStore(Store):
    """Files only, like the TypeScript SDK's JSONStore; no queries."""

    def __init__(
        self, base_dir: str | os.PathLike[str] = DEFAULT_STORE_PATH, *, durability: Durability = "os"
    ) -> None:
        self.base_dir = Path(base_dir)
        super().__init__(JsonRecords(self.base_dir, durability), DiskFiles(self.base_dir, durability))

    def _describe(self) -> str:
        return f"json:{self.base_dir}"


def postgres_store(options: PostgresOptions, file_store_base_dir: str, durability: Durability) -> Any:
    """Build a ``PostgresStore`` (imports psycopg only now)."""
    from kodestore.db.postgres import PostgresStore

    return PostgresStore(options=options, file_store_base_dir=file_store_base_dir, durability=durability)
