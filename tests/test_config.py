"""Options and environment resolve to one configuration; mistakes name their source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import kodestore
from kodestore.config import redact_dsn, resolve_options
from kodestore.errors import ConfigError


def test_defaults_are_the_embedded_store() -> None:
    options = resolve_options({}, env={})
    assert options.type == "sqlite"
    assert options.db_path == "./data/agents.db"
    assert options.file_store_base_dir == "./data/store"
    assert options.durability == "os"


def test_options_override_environment() -> None:
    env = {"KODE_STORE_TYPE": "memory", "KODE_SQLITE_PATH": "/env.db"}
    options = resolve_options({"type": "sqlite", "db_path": "/opt.db"}, env=env)
    assert (options.type, options.db_path) == ("sqlite", "/opt.db")
    assert resolve_options({}, env=env).type == "memory"


@pytest.mark.parametrize(
    ("options", "env", "named"),
    [
        ({}, {"KODE_STORE_TYPE": "oracle"}, "KODE_STORE_TYPE"),
        ({"type": "mongo"}, {}, "type"),
        ({}, {"KODE_DURABILITY": "sometimes"}, "KODE_DURABILITY"),
        ({"type": "postgres"}, {"POSTGRES_PORT": "five"}, "POSTGRES_PORT"),
        ({"type": "postgres", "connection": {"max": 0}}, {}, "connection.max"),
        ({"type": "postgres", "connection": {"hots": "x"}}, {}, "hots"),
        ({"type": "postgres", "schema": "bad; drop"}, {}, "schema"),
        ({"colour": "red"}, {}, "colour"),
    ],
)
def test_bad_configuration_names_the_culprit(
    options: dict[str, object], env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        resolve_options(options, env=env)


def test_postgres_dsn_sources() -> None:
    env = {"DATABASE_URL": "postgresql://u:pw@h/db"}
    assert resolve_options({"type": "postgres"}, env=env).postgres.dsn == "postgresql://u:pw@h/db"  # type: ignore[union-attr]
    built = resolve_options(
        {"type": "postgres", "connection": {"host": "db", "port": 6543, "user": "me", "password": "it's"}},
        env={},
    ).postgres
    assert built is not None
    assert "host='db'" in built.dsn and "port='6543'" in built.dsn and "password='it\\'s'" in built.dsn


def test_password_never_in_repr() -> None:
    options = resolve_options({"type": "postgres", "dsn": "postgresql://kode:s3cret@db:5432/x"}, env={})
    assert "s3cret" not in repr(options)
    assert "s3cret" not in redact_dsn("host=db password=s3cret user=kode")
    assert "s3cret" not in redact_dsn("host=db password='s3 cret' user=kode")


async def test_create_extended_store_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KODE_SQLITE_PATH", str(tmp_path / "env.db"))
    monkeypatch.setenv("KODE_STORE_PATH", str(tmp_path / "files"))
    monkeypatch.delenv("KODE_STORE_TYPE", raising=False)
    async with await kodestore.create_extended_store() as store:
        assert isinstance(store, kodestore.SqliteStore)
        assert await store.list() == []
    assert (tmp_path / "env.db").exists()
    assert (tmp_path / "env.db").stat().st_mode & 0o077 == 0


async def test_json_store_is_not_extended(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="json"):
        await kodestore.create_extended_store(type="json", file_store_base_dir=str(tmp_path))
    store = await kodestore.create_store(type="json", file_store_base_dir=str(tmp_path))
    assert isinstance(store, kodestore.JSONStore)
    await store.close()


def test_import_does_not_load_the_postgres_driver() -> None:
    code = "import sys, kodestore; kodestore.create_store; sys.exit('psycopg' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
