"""The Postgres dialect: jsonb operators (GIN-indexable containment) and code-point comparisons.

A plain parameter compared with a jsonb string goes through ``sql_plain_as_json_string``: see
``pg_text``."""

from __future__ import annotations

from hashlib import blake2b

from kodestore.db.base import Dialect, Stmt
from kodestore.db.pg_text import sql_plain_as_json_string


def advisory_key(*parts: str) -> int:
    """A signed 64-bit advisory-lock key: the first 8 bytes of blake2b over the NUL-joined parts."""
    digest = blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresDialect(Dialect):
    """Fragments for one schema (the migration lock key depends on it)."""

    name = "postgres"
    for_update = " FOR UPDATE"
    is_same = "IS NOT DISTINCT FROM"
    # READ COMMITTED takes a new snapshot per statement; an export's four queries need one
    snapshot_read = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._migration_key = advisory_key("kodestore-migrations", schema)

    def refresh_statistics(self) -> Stmt:
        # Every table of the store's schema (the first of the search path), not the whole database.
        # Without statistics, as right after a bulk load on a server whose autovacuum is off or has
        # not come round yet, the planner guesses: 45-53 ms for queries that take 1-3 ms with them.
        return Stmt(
            "DO $$ DECLARE t record; BEGIN"
            " FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema() LOOP"
            " EXECUTE format('ANALYZE %I', t.tablename); END LOOP; END $$"
        )

    def content_has_type(self, column: str) -> str:
        # containment, not a scan of the array: the GIN (jsonb_path_ops) index on content answers it
        block = f"jsonb_build_object('type', {sql_plain_as_json_string('?::text')})"
        return f"{column} @> jsonb_build_array({block})"

    def json_array_has(self, column: str) -> str:
        return f"{column} @> jsonb_build_array({sql_plain_as_json_string('?::text')})"

    def json_contains(self, column: str) -> str:
        # containment (GIN-indexed) narrows the rows; equality of each wanted top-level value makes
        # nested objects and arrays match only when equal, not when merely contained. Also serves
        # json_key_is: its one-key object needs no index of its own.
        return (
            f"EXISTS (SELECT 1 FROM (SELECT ?::jsonb AS doc) AS want WHERE {column} @> want.doc"
            f" AND NOT EXISTS (SELECT 1 FROM jsonb_each(want.doc) AS w"
            f" WHERE {column} -> w.key IS DISTINCT FROM w.value))"
        )

    def json_object_agg(self, key: str, value: str) -> str:
        return f"jsonb_object_agg({sql_plain_as_json_string(key)}, {value})::text"

    def prefix_range(self, column: str) -> str:
        return f'{column} COLLATE "C" >= ? AND {column} COLLATE "C" < ?'

    def table_exists(self, table: str) -> Stmt:
        return Stmt("SELECT to_regclass(?)", (table,), "one")

    def migration_lock(self) -> Stmt:
        """Held until commit: workers migrating the same schema at once run one after the other."""
        return Stmt("SELECT pg_advisory_xact_lock(?)", (self._migration_key,))
