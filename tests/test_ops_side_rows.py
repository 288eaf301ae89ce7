"""Suspended states, feedback and LangGraph checkpoints go along with their agent through backup,
restore and migrate, identical on SQLite and Postgres (``AgentRecords.side_rows``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from test_ops_data import Stores, dump_store, fill_agent

from kodestore import JSONStore, KodeStoreError, ops
from kodestore.backend import AgentRecords
from kodestore.langgraph import KodeCheckpointSaver
from kodestore.ops.migrate import AgentState
from kodestore.ops.restore import BackupInvalid, verify_backup
from kodestore.testing import sample_info

AGENT = "agent-hitl"
THREAD = "thread-lg"


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


def _config(thread_id: str, checkpoint_id: str | None = None) -> Any:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def _fill(store: Any) -> None:
    """An agent with records, suspended states (one expired) and feedback; a LangGraph thread with
    several checkpoints, channel values (bytes and JSON-ish), a namespace and pending writes."""
    await fill_agent(store, AGENT, messages=3, events=2)
    await store.save_suspended_state(
        AGENT, "s-live", {"tool": "rm", "args": {"path": "/tmp/x"}, "ñ": [1, 2.5]}
    )
    await store.save_suspended_state(AGENT, "s-other", {"b": 1, "a": {"z": None, "y": True}})
    await store.save_suspended_state(AGENT, "s-expired", {"gone": True}, ttl=timedelta(milliseconds=1))
    await store.add_feedback(AGENT, 5, "great", 1, {"text": "better", "k": [1]}, {"source": "ui"})
    await store.add_feedback(AGENT, 2, None, None, "plain correction", None)
    await store.add_feedback(AGENT, 3)

    saver = KodeCheckpointSaver(store)
    config = _config(THREAD)
    for step in range(4):
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {
            "messages": [f"m{i}" for i in range(step + 1)],
            "raw": b"\x00\xff" * step,
        }
        checkpoint["channel_versions"] = {"messages": f"{step + 1:032}", "raw": f"{step + 1:032}"}
        metadata: Any = {"step": step, "source": "loop", "run_id": f"run-{step % 2}", "ü": "x"}
        config = await saver.aput(config, checkpoint, metadata, checkpoint["channel_versions"])
        await saver.aput_writes(
            config, [("messages", f"pending-{step}"), ("raw", b"\x01\x02")], f"task-{step}"
        )
    sub = await saver.aput(
        {"configurable": {"thread_id": THREAD, "checkpoint_ns": "child:1"}},
        empty_checkpoint(),
        {"step": 0, "source": "input"},
        {},
    )
    await saver.aput_writes(sub, [("__error__", "boom")], "task-sub")
    await asyncio.sleep(0.01)  # s-expired is now expired


async def _checkpoints(store: Any) -> list[Any]:
    saver = KodeCheckpointSaver(store)
    found = []
    for ns in ("", "child:1"):
        config = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ns}}
        async for item in saver.alist(config):
            full = await saver.aget_tuple(item.config)
            assert full is not None
            for one in (item, full):
                found.append(
                    (
                        one.config,
                        one.checkpoint,
                        one.metadata,
                        one.parent_config,
                        sorted(one.pending_writes or []),
                    )
                )
    latest = await saver.aget_tuple(_config(THREAD))
    assert latest is not None
    found.append((latest.config, latest.checkpoint["channel_values"], sorted(latest.pending_writes or [])))
    return found


async def _side_view(store: Any) -> Any:
    """Everything of the side tables, through the public APIs."""
    stats = await store.aggregate_stats(AGENT)
    states = await store.list_suspended_states(AGENT)
    return (
        states,
        [await store.get_suspended_state(AGENT, s) for s in ("s-live", "s-other", "s-expired")],
        await store.query_feedback(agent_id=AGENT),
        (stats.feedback_count, stats.mean_rating),
        await _checkpoints(store),
    )


async def _exported(store: Any) -> dict[str, AgentRecords]:
    return dict(await store.export_agents([AGENT, THREAD]))


async def _check_filled(store: Any) -> None:
    view = await _side_view(store)
    assert [s.state_id for s in view[0]] and {s.state_id for s in view[0]} == {"s-live", "s-other"}
    assert view[1][2] is None and view[1][0] is not None
    assert len(view[2]) == 3 and view[3][0] == 3
    assert len(view[4]) > 8
    records = (await _exported(store))[AGENT]
    assert len(records.side_rows["suspended_states"]) == 3  # the expired one is copied too


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_backup_and_restore_keep_every_side_row(stores: Stores, tmp_path: Path, backend: str) -> None:
    source = await stores.new(backend, "source")
    await _fill(source)
    await _check_filled(source)
    manifest = await ops.backup(source, tmp_path / "backup")
    assert manifest["formatVersion"] == 3
    exported = await _exported(source)
    assert manifest["sideRows"] == sum(
        len(rows) for records in exported.values() for rows in records.side_rows.values()
    )
    for target_backend in ("sqlite", "postgres"):
        target = await stores.new(target_backend, f"restored-{target_backend}")
        restored = await ops.restore_into(tmp_path / "backup", target)
        assert restored["sideRows"] == manifest["sideRows"]
        assert await _side_view(target) == await _side_view(source)
        assert await _exported(target) == exported
        assert await dump_store(target) == await dump_store(source)


async def test_sqlite_postgres_sqlite_migrate_keeps_every_side_row(stores: Stores) -> None:
    first = await stores.new("sqlite", "first")
    await _fill(first)
    middle = await stores.new("postgres", "middle")
    totals = await ops.migrate(first, middle)
    exported = await _exported(first)
    side_rows = sum(len(rows) for records in exported.values() for rows in records.side_rows.values())
    assert totals["sideRows"] == side_rows and totals["sideRowsDropped"] == 0
    last = await stores.new("sqlite", "last")
    await ops.migrate(middle, last)
    expected = await _side_view(first)
    for store in (middle, last):
        assert await _side_view(store) == expected
        assert await _exported(store) == exported
        assert await dump_store(store) == await dump_store(first)

    once = await _exported(last)
    assert await ops.migrate(middle, last) == totals
    assert await _exported(last) == once
    assert await _side_view(last) == expected


async def test_side_rows_replace_the_targets_own(stores: Stores) -> None:
    source = await stores.new("sqlite", "source")
    await _fill(source)
    target = await stores.new("postgres", "target")
    await ops.migrate(source, target)
    await target.add_feedback(AGENT, 1, "only in the target")
    await target.delete_suspended_state(AGENT, "s-live")
    await ops.migrate(source, target)
    assert await _side_view(target) == await _side_view(source)


async def test_a_json_store_drops_side_rows_and_says_so(stores: Stores, tmp_path: Path) -> None:
    source = await stores.new("sqlite", "source")
    await _fill(source)
    target = await stores.new("json", "target")
    totals = await ops.migrate(source, target)
    assert totals["sideRows"] == 0 and totals["sideRowsDropped"] > 0
    assert (await target.export_agents([AGENT]))[AGENT].side_rows == {}

    await ops.backup(source, tmp_path / "backup")
    restored = await ops.restore_into(tmp_path / "backup", await stores.new("json", "restored"))
    assert restored["sideRows"] == 0 and restored["sideRowsDropped"] == totals["sideRowsDropped"]

    records = (await source.export_agents([AGENT]))[AGENT]
    with pytest.raises(KodeStoreError, match="JSONStore keeps no suspended states"):
        await target._records.import_agent(records, 0)
    assert isinstance(target, JSONStore)


def test_side_rows_json_round_trip_and_validation() -> None:
    side = {
        "langgraph_blobs": [("", "raw", "1", "bytes", b"\x00\xff")],
        "feedback": [("fb-1", 4, None, 2, '{"a":1}', None, 7)],
    }
    state = AgentState(sample_info("a1"), side_rows=side)
    data = state.to_json()
    assert data["sideRows"]["langgraph_blobs"][0][4] == {"$b64": "AP8="}
    assert AgentState.from_json(data) == state
    data["sideRows"] = {"nope": []}
    with pytest.raises(ValueError, match="unknown table"):
        AgentState.from_json(data)
    data["sideRows"] = {"feedback": [["fb-1", 4]]}
    with pytest.raises(ValueError, match="7-tuples"):
        AgentState.from_json(data)


async def test_a_manifest_with_the_wrong_side_row_count_is_refused(stores: Stores, tmp_path: Path) -> None:
    source = await stores.new("sqlite", "source")
    await _fill(source)
    await ops.backup(source, tmp_path / "backup")
    manifest_path = tmp_path / "backup" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["sideRows"] += 1
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BackupInvalid, match="side rows"):
        verify_backup(tmp_path / "backup")
