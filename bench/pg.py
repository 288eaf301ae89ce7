"""PostgreSQL helpers: where the server is, whether the bench can use it, a fresh schema per round."""

from __future__ import annotations

import importlib.util
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from kodestore.config import redact_dsn

DEFAULT_DSN = "postgresql://root@127.0.0.1:5432/test"


def default_dsn() -> str:
    return os.environ.get("KODESTORE_BENCH_DSN") or os.environ.get("KODESTORE_TEST_DSN") or DEFAULT_DSN


def unavailable(dsn: str) -> str | None:
    """Why the Postgres floor cannot run here, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'kodestore[postgres]')"
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        detail = " ".join(str(exc).split())[:160]
        return f"cannot connect to {redact_dsn(dsn)} ({type(exc).__name__}: {detail})"
    return None


def store_unavailable() -> str | None:
    """Why the Postgres store cannot run here (its backend not written yet), or None."""
    if importlib.util.find_spec("kodestore.db.postgres") is None:
        return "kodestore.db.postgres is missing (PostgresStore not available yet)"
    try:
        import kodestore

        kodestore.PostgresStore  # noqa: B018 - loads the backend, as the factory would
    except Exception as exc:  # any import failure is a reason to skip, reported as is
        return f"PostgresStore cannot be imported ({type(exc).__name__}: {exc})"
    return None


@contextmanager
def fresh_schema(dsn: str, prefix: str) -> Iterator[str]:
    """A new, empty schema for one round; dropped with everything in it afterwards."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def schema_bytes(dsn: str, schema: str) -> int:
    """Bytes of every table in ``schema`` with its indexes and TOAST."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def analyze(dsn: str, schema: str) -> None:
    """Planner statistics for every table in ``schema`` (what autovacuum does some time after a load)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        for (table,) in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchall():
            conn.execute(f"ANALYZE {table}")


def server_settings(dsn: str) -> dict[str, str]:
    """Settings that decide what a commit costs, for the results file."""
    import psycopg

    names = (
        "server_version",
        "synchronous_commit",
        "fsync",
        "wal_sync_method",
        "shared_buffers",
        "autovacuum",
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in names}  # type: ignore[index]
