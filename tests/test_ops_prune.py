"""``prune``: by age, by count per template, dry run, concurrent workers, live agents left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKENDS
from test_ops_data import Stores, dump_store, fill_agent

from kodestore import JSONStore, KodeStoreError, ops


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


async def _tick() -> None:
    await asyncio.sleep(0.003)  # updated_at has millisecond resolution


async def _agents(store: Any, names: list[str], template: str = "tpl-a") -> None:
    for name in names:
        await fill_agent(store, name, template=template, messages=2, events=2)
        await _tick()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_prune_by_age_deletes_rows_logs_and_media(stores: Stores, backend: str) -> None:
    store = await stores.new(backend, "s")
    await _agents(store, ["old-1", "old-2"])
    cutoff = datetime.now(UTC)
    await _tick()
    await _agents(store, ["new-1"])
    assert await ops.prune(store, older_than=cutoff, dry_run=True) == ["old-1", "old-2"]
    assert await store.list() == ["new-1", "old-1", "old-2"]
    assert await ops.prune(store, older_than=cutoff) == ["old-1", "old-2"]
    assert await store.list() == ["new-1"]
    for gone in ("old-1", "old-2"):
        assert [t async for t in store.read_events(gone)] == []
        assert await store.load_media_cache(gone) == []
        assert await store.load_history_windows(gone) == []
    if hasattr(store, "file_store_base_dir"):
        left = [p.name for p in (Path(store.file_store_base_dir) / "old-1").iterdir()]
        assert left == [".deleted"]  # only the tombstone that keeps the deletion from being undone
    assert await ops.prune(store, older_than=timedelta(days=30)) == []


async def test_keep_latest_per_template_with_and_without_age(stores: Stores) -> None:
    store = await stores.new("sqlite", "s")
    await _agents(store, ["a1", "a2", "a3"], template="alpha")
    await _agents(store, ["b1", "b2"], template="beta")
    cutoff = datetime.now(UTC)
    await _tick()
    await _agents(store, ["a4"], template="alpha")
    # 'a4' is new; of the old ones only those beyond the 2 newest alpha agents go
    assert await ops.prune(store, older_than=cutoff, keep_latest=2, dry_run=True) == ["a1", "a2"]
    assert await ops.prune(store, keep_latest=1, template_id="beta") == ["b1"]
    assert await ops.prune(store, keep_latest=1) == ["a1", "a2", "a3"]
    assert await store.list() == ["a4", "b2"]


async def test_dry_run_changes_nothing(stores: Stores) -> None:
    store = await stores.new("sqlite", "s")
    await _agents(store, ["a1", "a2"])
    before = await dump_store(store)
    assert await ops.prune(store, older_than=timedelta(0), dry_run=True) == ["a1", "a2"]
    assert await dump_store(store) == before


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_two_concurrent_prunes_split_the_work(stores: Stores, backend: str) -> None:
    store = await stores.new(backend, "s")
    names = [f"agent-{i:02d}" for i in range(20)]
    await _agents(store, names)
    first, second = await asyncio.gather(
        ops.prune(store, older_than=timedelta(0), batch_size=3),
        ops.prune(store, older_than=timedelta(0), batch_size=7),
    )
    assert sorted(first + second) == names
    assert not set(first) & set(second)
    assert await store.list() == []


async def test_an_agent_held_by_a_runtime_or_updated_since_is_kept(stores: Stores) -> None:
    store = await stores.new("sqlite", "s")
    await _agents(store, ["busy", "idle", "touched"])
    release = await store.acquire_agent_lock("busy")
    try:
        real_query = store.query_sessions
        touched = False

        async def touch_during_prune(**filters: Any) -> Any:
            nonlocal touched
            if filters.get("agent_id") == "touched" and not touched:
                touched = True  # the runtime saves a turn between the scan and the delete
                await _tick()
                await store.save_messages("touched", [])
            return await real_query(**filters)

        store.query_sessions = touch_during_prune
        assert await ops.prune(store, older_than=timedelta(0)) == ["idle"]
    finally:
        await release()
    assert await store.list() == ["busy", "touched"]


async def test_prune_validates_its_arguments(stores: Stores, tmp_path: Path) -> None:
    store = await stores.new("memory", "s")
    with pytest.raises(ValueError, match="older_than, keep_latest or both"):
        await ops.prune(store)
    with pytest.raises(ValueError, match="keep_latest"):
        await ops.prune(store, keep_latest=-1)
    with pytest.raises(ValueError, match="batch_size"):
        await ops.prune(store, older_than=timedelta(days=1), batch_size=0)
    with pytest.raises(ValueError, match="negative"):
        await ops.prune(store, older_than=timedelta(days=-1))
    async with JSONStore(tmp_path / "json") as files_only:
        with pytest.raises(KodeStoreError, match="queryable store"):
            await ops.prune(files_only, older_than=timedelta(days=1))
