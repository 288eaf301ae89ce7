"""``backup`` and ``restore``: round trips across backends, a busy source, refusals and corruption."""

from __future__ import annotations

import asyncio
import importlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_ops_data import PAIRS, Stores, dump_agent, dump_store, fill_agent

from kodestore import KodeStoreError, create_store, ops
from kodestore.demo import SimulatedAgent, new_agent, run_turn
from kodestore.models import Message
from kodestore.ops.backup import AGENTS_FILE, EVENTS_FILE, MANIFEST_FILE
from kodestore.ops.migrate import AgentState
from kodestore.ops.restore import BackupInvalid

migrate_module = importlib.import_module("kodestore.ops.migrate")  # ``ops.migrate`` is the function


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
async def test_round_trip_is_identical(
    stores: Stores,
    tmp_path: Path,
    source_kind: str,
    target_kind: str,
) -> None:
    source = await stores.new(source_kind, "source")
    for i in range(4):
        await fill_agent(source, f"agent-{i}", template=f"tpl-{i % 2}", messages=2 + i, events=3 * i)
    manifest = await ops.backup(source, tmp_path / "backup")
    assert manifest["agents"] == 4 and manifest["source"] == {"kind": source_kind}
    assert manifest["counts"] == {"messages": 14, "toolCalls": 6, "snapshots": 4, "events": 18}
    written = sorted(p.name for p in (tmp_path / "backup").iterdir())
    assert written == [AGENTS_FILE, EVENTS_FILE, MANIFEST_FILE]
    target = await stores.new(target_kind, "target")
    restored = await ops.restore_into(tmp_path / "backup", target)
    assert restored["agents"] == 4 and restored["sourceKind"] == source_kind
    assert await dump_store(target) == await dump_store(source)
    if hasattr(target, "check_consistency"):
        assert (await target.check_consistency()).consistent


async def test_restore_by_factory_options(stores: Stores, tmp_path: Path) -> None:
    source = await stores.new("sqlite", "source")
    await fill_agent(source, "a1")
    await ops.backup(source, tmp_path / "backup")
    where = {"db_path": str(tmp_path / "t" / "a.db"), "file_store_base_dir": str(tmp_path / "t" / "files")}
    await ops.restore(tmp_path / "backup", type="sqlite", **where)
    async with await create_store(type="sqlite", **where) as target:
        assert await dump_store(target) == await dump_store(source)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_busy_backup_restores_a_consistent_store(
    stores: Stores,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    monkeypatch.setattr(migrate_module, "BATCH", 3)  # snapshots at several moments of the writers
    source = await stores.new(backend, "source")
    rng = random.Random(5)
    settled = [f"settled-{i:02d}" for i in range(12)]
    for agent_id in settled:
        await fill_agent(source, agent_id, messages=6, events=12)
    busy = [new_agent(f"busy-{i}", "coder", "u") for i in range(6)]
    for agent in busy:
        await source.save_info(agent.info.agent_id, agent.info)
    before = {agent_id: await dump_agent(source, agent_id) for agent_id in settled}
    stop = asyncio.Event()
    turns = 0

    async def runtime(agent: SimulatedAgent) -> None:  # one writer per agent, as a runtime is
        nonlocal turns
        turn = 0
        while not stop.is_set():
            await run_turn(source, agent, turn, rng)
            turn += 1
            turns += 1
            await asyncio.sleep(rng.uniform(0.005, 0.02))  # the model thinking (in life: seconds)

    tasks = [asyncio.create_task(runtime(agent)) for agent in busy]
    await asyncio.sleep(0.05)
    try:
        manifest = await ops.backup(source, tmp_path / "backup")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert turns > 8 and manifest["agents"] == len(settled) + len(busy)
    target = await stores.new("sqlite", "target")
    await ops.restore_into(tmp_path / "backup", target)
    for agent_id in settled:
        assert await dump_agent(target, agent_id) == before[agent_id]
    behind = 0
    for agent in busy:
        agent_id = agent.info.agent_id
        restored = await dump_agent(target, agent_id)
        now = await dump_agent(source, agent_id)
        messages, calls, events = restored["messages"], restored["toolCalls"], restored["events"]
        # one moment of the agent: runtime writes only grow, so each part is a prefix of today's
        assert messages == now["messages"][: len(messages)]
        assert calls == now["toolCalls"][: len(calls)]
        assert events == now["events"][: len(events)]
        assert restored["info"]["messageCount"] == len(messages)
        assert len(calls) in (len(messages) // 2, len(messages) // 2 - 1)  # a turn saves messages first
        bookmark = restored["info"].get("lastBookmark")
        assert bookmark is None or bookmark["seq"] <= len(events)
        behind += len(messages) < len(now["messages"])
    assert behind  # the copies are of agents that kept changing during and after the backup
    assert (await target.check_consistency()).consistent


async def test_restore_refuses_a_store_with_agents(stores: Stores, tmp_path: Path) -> None:
    source = await stores.new("sqlite", "source")
    await fill_agent(source, "a1")
    await fill_agent(source, "a2")
    await ops.backup(source, tmp_path / "backup")
    target = await stores.new("sqlite", "target")
    await fill_agent(target, "mine", messages=2, events=2)
    before = await dump_store(target)
    with pytest.raises(KodeStoreError, match="already holds 1 agent"):
        await ops.restore_into(tmp_path / "backup", target)
    assert await dump_store(target) == before
    await ops.restore_into(tmp_path / "backup", target, overwrite=True)
    assert await dump_store(target) == await dump_store(source)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", [AGENTS_FILE, EVENTS_FILE])
async def test_a_flipped_byte_fails_verification_and_changes_nothing(
    stores: Stores,
    tmp_path: Path,
    name: str,
) -> None:
    source = await stores.new("sqlite", "source")
    await fill_agent(source, "a1")
    await ops.backup(source, tmp_path / "backup")
    _flip_byte(tmp_path / "backup" / name, 40)
    target = await stores.new("sqlite", "target")
    with pytest.raises(BackupInvalid, match="does not match the manifest"):
        await ops.restore_into(tmp_path / "backup", target)
    assert await target.list() == []
    db = tmp_path / "never" / "agents.db"
    with pytest.raises(BackupInvalid):
        await ops.restore(tmp_path / "backup", type="sqlite", db_path=str(db), file_store_base_dir=str(db))
    assert not db.parent.exists()  # verified before the target was even opened


async def test_a_consistent_lie_in_the_manifest_is_caught(stores: Stores, tmp_path: Path) -> None:
    source = await stores.new("memory", "source")
    await fill_agent(source, "a1")
    await ops.backup(source, tmp_path / "backup")
    manifest_path = tmp_path / "backup" / MANIFEST_FILE
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["counts"]["events"] += 1
    manifest_path.write_bytes(orjson.dumps(manifest))
    with pytest.raises(BackupInvalid, match="manifest says"):
        ops.verify_backup(tmp_path / "backup")
    manifest["formatVersion"] = 99
    manifest_path.write_bytes(orjson.dumps(manifest))
    with pytest.raises(BackupInvalid, match="version 99"):
        ops.verify_backup(tmp_path / "backup")
    with pytest.raises(BackupInvalid, match=r"no manifest\.json"):
        ops.verify_backup(tmp_path)


async def test_a_failed_restore_removes_what_it_wrote(
    stores: Stores,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = await stores.new("memory", "source")
    for i in range(3):
        await fill_agent(source, f"a{i}")
    await ops.backup(source, tmp_path / "backup")
    target = await stores.new("sqlite", "target")
    real_append = target.append_event
    calls = 0

    async def failing_append(agent_id: str, timeline: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 15:
            raise OSError("disk full")
        await real_append(agent_id, timeline)

    monkeypatch.setattr(target, "append_event", failing_append)
    with pytest.raises(OSError, match="disk full"):
        await ops.restore_into(tmp_path / "backup", target)
    assert await target.list() == []
    monkeypatch.undo()
    await ops.restore_into(tmp_path / "backup", target)
    assert await dump_store(target) == await dump_store(source)


async def test_backup_refuses_a_non_empty_destination_and_leaves_no_partial(
    stores: Stores,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = await stores.new("memory", "source")
    await fill_agent(source, "a1")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(KodeStoreError, match="not an empty directory"):
        await ops.backup(source, tmp_path / "full")
    (tmp_path / "empty").mkdir()
    await ops.backup(source, tmp_path / "empty")
    assert ops.verify_backup(tmp_path / "empty")["agents"] == 1

    async def broken(*args: Any) -> None:
        raise KodeStoreError("database went away")

    monkeypatch.setattr(source, "export_agents", broken)
    with pytest.raises(KodeStoreError, match="went away"):
        await ops.backup(source, tmp_path / "failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


async def test_backup_and_restore_report_progress(stores: Stores, tmp_path: Path) -> None:
    source = await stores.new("memory", "source")
    for i in range(3):
        await fill_agent(source, f"a{i}", events=1)
    seen: list[tuple[int, int]] = []
    await ops.backup(source, tmp_path / "backup", progress=lambda done, total: seen.append((done, total)))
    target = await stores.new("memory", "target")
    await ops.restore_into(tmp_path / "backup", target, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)] * 2


async def _hammer(store: Any, agent: SimulatedAgent, stop: asyncio.Event, turns: list[int]) -> None:
    """Turns back to back, no pause and no agent lock: every read of this agent races a write."""
    rng = random.Random(agent.info.agent_id)
    while not stop.is_set():
        await run_turn(store, agent, len(turns), rng)
        turns.append(1)
        await asyncio.sleep(0)


def _tool_use_ids(messages: list[Message]) -> list[str]:
    return [block["id"] for m in messages for block in m.content if block.get("type") == "tool_use"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_backup_racing_unlocked_writers_is_consistent(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """Each batch of agents is one snapshot: no agent is read half before and half after a save."""
    monkeypatch.setattr(migrate_module, "BATCH", 4)  # several batches, each racing the writers
    source = await stores.new(backend, "source")
    for i in range(6):
        await fill_agent(source, f"settled-{i}", messages=4, events=4)
    hot = [new_agent(f"hot-{i}", "coder", "u") for i in range(5)]
    for agent in hot:
        await source.save_info(agent.info.agent_id, agent.info)
    stop = asyncio.Event()
    turns: list[list[int]] = [[] for _ in hot]
    writers = [
        asyncio.create_task(_hammer(source, a, stop, done)) for a, done in zip(hot, turns, strict=True)
    ]
    await asyncio.sleep(0.05)
    before = sum(map(len, turns))
    try:
        manifest = await ops.backup(source, tmp_path / "backup")
    finally:
        during = sum(map(len, turns)) - before
        stop.set()
        await asyncio.gather(*writers)
    assert manifest["consistency"] == "batch" and manifest["agents"] == 11
    assert during >= len(hot)  # the writers kept saving while the backup read
    with open(tmp_path / "backup" / AGENTS_FILE, "rb") as lines:
        backed_up = [(AgentState.from_json(data), data["eventCount"]) for data in map(orjson.loads, lines)]
    assert len(backed_up) == 11
    for state, events in backed_up:
        messages, calls = state.messages, state.tool_calls
        assert state.info.message_count == len(messages), state.agent_id
        bookmark = state.info.last_bookmark
        assert bookmark is None or bookmark.seq <= events  # the log is read after the snapshot
        if state.agent_id.startswith("hot-"):
            # a turn saves its messages, then its tool call: a snapshot sees all of a turn's
            # messages and either none or all of its call, never a call ahead of the history
            assert len(messages) % 2 == 0
            assert len(calls) in (len(messages) // 2, len(messages) // 2 - 1)
            assert [call.id for call in calls] == _tool_use_ids(messages)[: len(calls)]
    target = await stores.new("sqlite", "target")
    await ops.restore_into(tmp_path / "backup", target)
    assert (await target.check_consistency()).consistent
