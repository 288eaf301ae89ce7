"""``create_store`` / ``create_extended_store``: a ready store from options or the environment."""

from __future__ import annotations

from typing import Any

from kodestore.config import StoreOptions, resolve_options
from kodestore.errors import ConfigError
from kodestore.extended import ExtendedStore
from kodestore.facade import Store
from kodestore.stores import JSONStore, MemoryStore, SqliteStore, postgres_store


def build_store(options: StoreOptions) -> Store:
    """An unopened store for resolved options."""
    if options.type == "sqlite":
        return SqliteStore(options.db_path, options.file_store_base_dir, durability=options.durability)
    if options.type == "memory":
        return MemoryStore()
    if options.type == "json":
        return JSONStore(options.file_store_base_dir, durability=options.durability)
    assert options.postgres is not None
    store: Store = postgres_store(options.postgres, options.file_store_base_dir, options.durability)
    return store


async def create_store(**options: Any) -> Store:
    """Any store, opened: ``type`` = sqlite (default), postgres, memory or json."""
    return await build_store(resolve_options(options)).open()


async def create_extended_store(**options: Any) -> ExtendedStore:
    """A store with queries, health, metrics, locks and forks (sqlite, postgres or memory), opened."""
    resolved = resolve_options(options)
    if resolved.type == "json":
        raise ConfigError("type 'json' has no queries or locks; use create_store() for a JSONStore")
    store = build_store(resolved)
    assert isinstance(store, ExtendedStore)
    return await store.open()
