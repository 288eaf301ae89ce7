"""Numbered, append-only schema migrations: ``schema/<dialect>/NNN_name.sql``, recorded in a table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from kodestore.db.base import Dialect, Plan, Stmt
from kodestore.errors import ConfigError

MIGRATIONS_TABLE = "kodestore_migrations"
_FILE_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    applied: tuple[int, ...]
    pending: tuple[int, ...]

    @property
    def current(self) -> bool:
        return not self.pending


def schema_root() -> Path:
    """The installed copy (inside the package) or, in a source checkout, the repository's ``schema/``."""
    packaged = Path(__file__).resolve().parent.parent / "schema"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schema"


def split_statements(script: str) -> tuple[str, ...]:
    """Split a migration file into statements: each ends with ``;`` at the end of a line outside a
    ``$$``-quoted body (a function's)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements, current = [], []
    quoted = False
    for line in lines:
        current.append(line)
        quoted ^= line.count("$$") % 2 == 1
        if not quoted and line.rstrip().endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";"))
            current = []
    if "\n".join(current).strip():
        raise ConfigError("migration file ends with a statement that has no ';'")
    return tuple(s for s in statements if s)


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    folder = schema_root() / dialect
    if not folder.is_dir():
        raise ConfigError(f"no schema folder for dialect {dialect!r} at {folder}")
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ConfigError(f"migration file {path.name!r} is not named NNN_name.sql")
        version = int(match.group(1))
        migrations.append(Migration(version, match.group(2), split_statements(path.read_text())))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ConfigError(f"migrations for {dialect} must be numbered 001, 002, ... without gaps: {versions}")
    return tuple(migrations)


def _applied(create_table: bool) -> Plan[tuple[int, ...]]:
    if create_table:
        yield Stmt(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)"
        )
    rows = yield Stmt(f"SELECT version FROM {MIGRATIONS_TABLE} ORDER BY version", fetch="all")
    return tuple(int(r[0]) for r in rows)


def migrate_plan(dialect: Dialect, now_ms: int) -> Plan[tuple[int, ...]]:
    """Apply every pending migration in one transaction; returns the versions applied now.

    The dialect's migration lock (a Postgres advisory lock) makes workers that start together on an
    empty database wait for the first one instead of racing it.
    """
    lock = dialect.migration_lock()
    if lock is not None:
        yield lock
    applied = set((yield from _applied(create_table=True)))
    done = []
    for migration in load_migrations(dialect.name):
        if migration.version in applied:
            continue
        for statement in migration.statements:
            yield Stmt(statement)
        yield Stmt(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at_ms) VALUES (?, ?, ?)",
            (migration.version, migration.name, now_ms),
        )
        done.append(migration.version)
    return tuple(done)


def status_plan(dialect: Dialect) -> Plan[SchemaStatus]:
    """Read-only: which migrations are applied and which are pending."""
    row = yield dialect.table_exists(MIGRATIONS_TABLE)
    exists = row is not None and row[0] is not None
    applied = (yield from _applied(create_table=False)) if exists else ()
    pending = tuple(m.version for m in load_migrations(dialect.name) if m.version not in applied)
    return SchemaStatus(applied=applied, pending=pending)
