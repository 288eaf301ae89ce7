"""``migrate``: every agent between any two stores, identical, idempotent, resumable, verified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_ops_data import Stores, dump_store, fill_agent

from kodestore import Bookmark, JSONStore, KodeStoreError, Timeline, ops
from kodestore.models import HistoryWindow


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


async def _fill(store: Any, agents: int = 4) -> None:
    for i in range(agents):
        await fill_agent(store, f"agent-{i}", template=f"tpl-{i % 2}", messages=2 * i, events=4 * i)


async def test_sqlite_to_postgres_to_sqlite_is_identical(stores: Stores) -> None:
    first = await stores.new("sqlite", "first")
    await _fill(first)
    middle = await stores.new("postgres", "middle")
    totals = await ops.migrate(first, middle)
    assert totals == {"agents": 4, "messages": 12, "toolCalls": 6, "events": 24, "snapshots": 4}
    last = await stores.new("sqlite", "last")
    await ops.migrate(middle, last)
    expected = await dump_store(first)
    assert await dump_store(middle) == expected
    assert await dump_store(last) == expected
    assert (await last.check_consistency()).consistent


@pytest.mark.parametrize(("source_kind", "target_kind"), [("sqlite", "memory"), ("memory", "postgres")])
async def test_migrating_twice_changes_nothing(stores: Stores, source_kind: str, target_kind: str) -> None:
    source = await stores.new(source_kind, "source")
    await _fill(source)
    target = await stores.new(target_kind, "target")
    first = await ops.migrate(source, target)
    once = await dump_store(target)
    assert await ops.migrate(source, target) == first
    assert await dump_store(target) == once


async def test_json_store_to_sqlite(stores: Stores, tmp_path: Path) -> None:
    async with JSONStore(tmp_path / "json") as source:
        await _fill(source)
        target = await stores.new("sqlite", "target")
        await ops.migrate(source, target)
        assert await dump_store(target, timestamps=False) == await dump_store(source, timestamps=False)
        sessions = await target.query_sessions(sort_by="created_at")
        assert sorted(s.agent_id for s in sessions) == [f"agent-{i}" for i in range(4)]


async def test_an_interrupted_migration_resumes_without_duplicates(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await stores.new("sqlite", "source")
    await _fill(source)
    target = await stores.new("sqlite", "target")
    real_append = target.append_event
    appended = 0

    async def crash_midway(agent_id: str, timeline: Any) -> None:
        nonlocal appended
        appended += 1
        if appended == 10:  # in the middle of agent-2's log
            raise KodeStoreError("connection lost")
        await real_append(agent_id, timeline)

    monkeypatch.setattr(target, "append_event", crash_midway)
    with pytest.raises(KodeStoreError, match="connection lost"):
        await ops.migrate(source, target)
    monkeypatch.undo()
    seen: list[tuple[int, int]] = []
    await ops.migrate(source, target, progress=lambda done, total: seen.append((done, total)))
    assert await dump_store(target) == await dump_store(source)
    assert seen[-1] == (4, 4)


async def test_growth_of_the_source_is_appended_on_the_next_run(stores: Stores) -> None:
    source = await stores.new("sqlite", "source")
    await _fill(source, agents=2)
    target = await stores.new("sqlite", "target")
    await ops.migrate(source, target)
    await source.append_event("agent-1", Timeline(99, Bookmark(99, 1), {"channel": "monitor", "type": "x"}))
    await source.save_history_window("agent-1", HistoryWindow("w2", [], [], {}, 9))
    await ops.migrate(source, target)
    assert await dump_store(target) == await dump_store(source)


async def test_a_target_that_diverged_is_refused(stores: Stores) -> None:
    source = await stores.new("sqlite", "source")
    await _fill(source, agents=2)
    target = await stores.new("sqlite", "target")
    await target.append_event("agent-1", Timeline(7, Bookmark(7, 1), {"channel": "progress", "type": "own"}))
    with pytest.raises(KodeStoreError, match="target's event 0 has seq 7"):
        await ops.migrate(source, target)


async def test_a_failed_verification_raises(stores: Stores, monkeypatch: pytest.MonkeyPatch) -> None:
    source = await stores.new("memory", "source")
    await _fill(source, agents=2)
    target = await stores.new("memory", "target")
    real_load = target.load_messages

    async def lossy_load(agent_id: str) -> Any:
        return (await real_load(agent_id))[:-1]

    monkeypatch.setattr(target, "load_messages", lossy_load)
    with pytest.raises(KodeStoreError, match="verification failed for 1 agent"):
        await ops.migrate(source, target)


async def _never_analyzed(store: Any) -> set[str]:
    """The tables of a Postgres store's schema that no ``ANALYZE`` command has visited."""
    from kodestore.db.base import Stmt

    stmt = Stmt(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = ? AND last_analyze IS NULL",
        (store.options.schema,),
        "all",
    )
    return {name for (name,) in await store.driver.fetch(stmt)}


async def test_restore_and_migrate_leave_postgres_with_fresh_statistics(
    stores: Stores, tmp_path: Path
) -> None:
    """After a bulk load the planner needs the tables' statistics, and a server whose autovacuum is
    off (or has not come round yet) gathers none: the operations refresh them for the store's own
    schema, and only for it."""
    source = await stores.new("sqlite", "source")
    await _fill(source)
    migrated = await stores.new("postgres", "migrated")
    bystander = await stores.new("postgres", "bystander")
    assert {"agents", "messages", "tool_calls"} <= await _never_analyzed(migrated)
    await ops.migrate(source, migrated)
    assert await _never_analyzed(migrated) == set()
    assert {"agents", "messages", "tool_calls"} <= await _never_analyzed(bystander)

    await ops.backup(source, tmp_path / "backup")
    restored = await stores.new("postgres", "restored")
    await ops.restore_into(tmp_path / "backup", restored)
    assert await _never_analyzed(restored) == set()
    assert {"agents", "messages", "tool_calls"} <= await _never_analyzed(bystander)


async def test_refreshing_statistics_changes_nothing_on_sqlite(stores: Stores) -> None:
    store = await stores.new("sqlite", "s")
    await _fill(store, agents=1)
    before = await dump_store(store)
    await store.refresh_statistics()
    assert await dump_store(store) == before
