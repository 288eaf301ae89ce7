"""Store options from keyword arguments and environment variables, validated in one place.

Every problem raises ``ConfigError`` naming the option or the variable it came from. Passwords are
kept out of every ``repr`` and message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kodestore.errors import ConfigError

StoreType = Literal["sqlite", "postgres", "memory", "json"]
Durability = Literal["os", "fsync"]
STORE_TYPES: tuple[str, ...] = ("sqlite", "postgres", "memory", "json")
DURABILITIES: tuple[str, ...] = ("os", "fsync")

DEFAULT_SQLITE_PATH = "./data/agents.db"
DEFAULT_STORE_PATH = "./data/store"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_CONNECTION_KEYS = {
    "host",
    "port",
    "database",
    "user",
    "password",
    "max",
    "min",
    "idle_timeout_ms",
    "connection_timeout_ms",
}
_OPTION_KEYS = {
    "type",
    "db_path",
    "file_store_base_dir",
    "dsn",
    "connection",
    "schema",
    "durability",
    "pool",
    "prepare_statements",
}


@dataclass(frozen=True)
class PostgresOptions:
    """How to reach Postgres: a DSN (or a caller-owned pool) plus pool sizing and timeouts."""

    dsn: str = field(repr=False)
    schema: str = "public"
    min_size: int = 1
    max_size: int = 10
    idle_timeout_ms: int = 300_000
    connection_timeout_ms: int = 10_000
    prepare_statements: bool = True
    pool: Any = field(default=None, repr=False)  # an AsyncConnectionPool the caller owns

    def __repr__(self) -> str:
        return (
            f"PostgresOptions(dsn={redact_dsn(self.dsn)!r}, schema={self.schema!r}, "
            f"max_size={self.max_size}, prepare_statements={self.prepare_statements})"
        )


@dataclass(frozen=True)
class StoreOptions:
    type: StoreType
    db_path: str
    file_store_base_dir: str
    durability: Durability
    postgres: PostgresOptions | None


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (URL or key=value form)."""
    redacted = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", redacted, flags=re.IGNORECASE)


def _quote_conninfo(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def _int(value: Any, name: str, minimum: int = 0) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or number < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _postgres_options(options: Mapping[str, Any], env: Mapping[str, str]) -> PostgresOptions:
    connection = dict(options.get("connection") or {})
    unknown = set(connection) - _CONNECTION_KEYS
    if unknown:
        raise ConfigError(f"connection: unknown key(s) {sorted(unknown)}; known: {sorted(_CONNECTION_KEYS)}")
    dsn = options.get("dsn")
    if dsn is None and not connection:
        dsn = env.get("KODE_POSTGRES_DSN") or env.get("DATABASE_URL")
    if dsn is not None and not isinstance(dsn, str):
        raise ConfigError("dsn must be a string")
    if dsn is None:
        host = connection.get("host", env.get("POSTGRES_HOST", "localhost"))
        port = _int(
            connection.get("port", env.get("POSTGRES_PORT", 5432)), "POSTGRES_PORT / connection.port", 1
        )
        parts = {
            "host": str(host),
            "port": str(port),
            "dbname": str(connection.get("database", env.get("POSTGRES_DB", "kode_agents"))),
            "user": str(connection.get("user", env.get("POSTGRES_USER", "kode"))),
        }
        password = connection.get("password", env.get("POSTGRES_PASSWORD"))
        if password:
            parts["password"] = str(password)
        dsn = " ".join(f"{key}={_quote_conninfo(value)}" for key, value in parts.items())
    schema = options.get("schema", env.get("KODE_POSTGRES_SCHEMA", "public"))
    if not isinstance(schema, str) or not _SCHEMA_NAME.match(schema):
        raise ConfigError(f"schema must be a plain SQL identifier, got {schema!r}")
    max_size = _int(connection.get("max", 10), "connection.max", 1)
    return PostgresOptions(
        dsn=dsn,
        schema=schema,
        min_size=min(_int(connection.get("min", 1), "connection.min", 0), max_size),
        max_size=max_size,
        idle_timeout_ms=_int(connection.get("idle_timeout_ms", 300_000), "connection.idle_timeout_ms", 1),
        connection_timeout_ms=_int(
            connection.get("connection_timeout_ms", 10_000), "connection.connection_timeout_ms", 1
        ),
        prepare_statements=bool(options.get("prepare_statements", True)),
        pool=options.get("pool"),
    )


def resolve_options(options: Mapping[str, Any], env: Mapping[str, str] | None = None) -> StoreOptions:
    """Options win over the environment; the environment wins over defaults."""
    env = os.environ if env is None else env
    unknown = set(options) - _OPTION_KEYS
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; known: {sorted(_OPTION_KEYS)}")
    if "type" in options:
        store_type = _choice(str(options["type"]), "type", STORE_TYPES)
    else:
        store_type = _choice(
            env.get("KODE_STORE_TYPE", "sqlite").strip().lower(), "KODE_STORE_TYPE", STORE_TYPES
        )
    if "durability" in options:
        durability = _choice(str(options["durability"]), "durability", DURABILITIES)
    else:
        durability = _choice(env.get("KODE_DURABILITY", "os"), "KODE_DURABILITY", DURABILITIES)
    db_path = str(options.get("db_path") or env.get("KODE_SQLITE_PATH") or DEFAULT_SQLITE_PATH)
    base_dir = str(options.get("file_store_base_dir") or env.get("KODE_STORE_PATH") or DEFAULT_STORE_PATH)
    postgres = _postgres_options(options, env) if store_type == "postgres" else None
    return StoreOptions(
        type=store_type,  # type: ignore[arg-type]
        db_path=db_path,
        file_store_base_dir=base_dir,
        durability=durability,  # type: ignore[arg-type]
        postgres=postgres,
    )
