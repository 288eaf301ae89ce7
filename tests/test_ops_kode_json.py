"""``import_kode_json``: a directory in the TypeScript SDK's JSONStore layout, written by hand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_ops_data import AWKWARD, Stores, dump_store

from kodestore import KodeStoreError, ops
from kodestore.testing import sample_info, sample_message, sample_snapshot, sample_timeline, sample_tool_call


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


def _write(path: Path, value: Any, pretty: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2 if pretty else None, ensure_ascii=False), "utf-8")


def _lines(path: Path, events: list[Any], tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(e.to_dict(), ensure_ascii=False) + "\n" for e in events) + tail
    path.write_text(text, "utf-8")


def write_sdk_agent(base: Path, agent_id: str) -> dict[str, Any]:
    """One agent as the SDK's JSONStore lays it out, with a crash's leftovers; returns what to expect."""
    root = base / agent_id
    messages = [sample_message(i, text=f"{AWKWARD} {i}") for i in range(4)]
    info = sample_info(agent_id, "tpl-sdk")
    info.message_count = 4
    _write(root / "meta.json", info.to_dict())
    # runtime: messages.json is stale; its WAL holds the save that did not reach the main file
    _write(root / "runtime" / "messages.json", [m.to_dict() for m in messages[:2]])
    _write(
        root / "runtime" / "messages.wal", {"data": [m.to_dict() for m in messages], "timestamp": 5}, False
    )
    _write(root / "runtime" / "tool-calls.json", [sample_tool_call(i).to_dict() for i in range(2)])
    (root / "runtime" / "tool-calls.wal").write_text('{"data": [{"id": "torn', "utf-8")  # unreadable: ignored
    _write(
        root / "runtime" / "todos.json",
        {"todos": [{"id": "t", "title": AWKWARD}], "version": 3, "updatedAt": 9},
    )
    _write(
        root / "runtime" / "media-cache.json",
        [{"key": "k", "provider": "p", "mimeType": "image/png", "sizeBytes": 1}],
    )
    # events: seq 1..9 over three channels. progress.wal holds seq 9, never flushed, after seq 6, which
    # was flushed before the crash hit the WAL rewrite, and ends with a torn line; control.wal repeats 7
    timeline = {
        seq: sample_timeline(seq, ("progress", "control", "monitor")[seq % 3]) for seq in range(1, 10)
    }
    _lines(root / "events" / "progress.log", [timeline[3], timeline[6]])
    _lines(root / "events" / "control.log", [timeline[1], timeline[4], timeline[7]])
    _lines(root / "events" / "control.wal", [timeline[7]])
    _lines(root / "events" / "monitor.log", [timeline[2], timeline[5], timeline[8]])
    (root / "events" / "monitor.wal").write_text("", "utf-8")
    _lines(root / "events" / "progress.wal", [timeline[6], timeline[9]], tail='{"cursor": 99, "bookm')
    windows = [
        {"id": f"w{i}", "messages": [messages[0].to_dict()], "events": [], "stats": {}, "timestamp": ts}
        for i, ts in ((2, 200), (1, 100))
    ]
    for window in windows:
        _write(root / "history" / "windows" / f"{window['timestamp']}.json", window)
    compression = {"id": "c1", "windowId": "w1", "config": {}, "summary": AWKWARD, "ratio": 0.4,
                   "recoveredFiles": ["src/a.py"], "timestamp": 150}  # fmt: skip
    _write(root / "history" / "compressions" / "150.json", compression)
    recovered_text = "# Recovered: src/a.py\n# Timestamp: 160\n# Mtime: 120\n\nline 1\n# not a header\n"
    (root / "history" / "recovered").mkdir(parents=True)
    (root / "history" / "recovered" / "src_a.py_160.txt").write_text(recovered_text, "utf-8")
    snapshot = sample_snapshot("sfp-2", messages[:2])
    _write(root / "snapshots" / "sfp-2.json", snapshot.to_dict())
    return {
        "messages": [m.to_dict() for m in messages],
        "toolCalls": [sample_tool_call(i).to_dict() for i in range(2)],
        "events": [timeline[seq].to_dict() for seq in range(1, 10)],
        "historyWindows": sorted(windows, key=lambda w: w["timestamp"]),
        "compressionRecords": [compression],
        "recoveredFiles": [
            {"path": "src/a.py", "content": "line 1\n# not a header\n", "mtime": 120, "timestamp": 160}
        ],
        "snapshots": [snapshot.to_dict()],
        "todos": {"todos": [{"id": "t", "title": AWKWARD}], "version": 3, "updatedAt": 9},
        "mediaCache": [
            {"key": "k", "provider": "p", "mimeType": "image/png", "sizeBytes": 1, "createdAt": 0}
        ],
        "info": info.to_dict(),
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "memory"])
async def test_everything_lands_including_pending_wal(stores: Stores, tmp_path: Path, backend: str) -> None:
    expected = {name: write_sdk_agent(tmp_path / "sdk", name) for name in ("agt-1", "agt-2")}
    store = await stores.new(backend, "target")
    report = await ops.import_kode_json(tmp_path / "sdk", store)
    assert report.to_dict() == {
        "agents": 2,
        "messages": 8,
        "toolCalls": 4,
        "events": 18,
        "skippedEventLines": 2,  # the torn WAL tail of each agent
        "skipped": [],
    }
    dumped = await dump_store(store)
    for name, want in expected.items():
        got = dumped[name]
        for key, value in want.items():
            assert got[key] == value, (name, key)
    if hasattr(store, "check_consistency"):
        assert (await store.check_consistency()).consistent


async def test_reimport_is_idempotent_and_bad_agents_are_skipped(stores: Stores, tmp_path: Path) -> None:
    base = tmp_path / "sdk"
    write_sdk_agent(base, "good")
    (base / "no-meta" / "runtime").mkdir(parents=True)
    _write(base / "broken" / "meta.json", sample_info("broken").to_dict())
    (base / "broken" / "snapshots").mkdir()
    (base / "broken" / "snapshots" / "s.json").write_text("{not json", "utf-8")
    _write(base / "renamed" / "meta.json", sample_info("someone-else").to_dict())
    store = await stores.new("sqlite", "target")
    report = await ops.import_kode_json(base, store)
    assert report.agents == ["good"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"broken", "no-meta", "renamed"}
    assert "no meta.json" in reasons["no-meta"] and "s.json" in reasons["broken"]
    assert "someone-else" in reasons["renamed"]
    once = await dump_store(store)
    await ops.import_kode_json(base, store)
    again = await dump_store(store)
    assert again["good"].pop("updatedAtMs") >= once["good"].pop("updatedAtMs")  # the SDK keeps none
    assert again == once  # messages keep their first-import time


async def test_a_missing_directory_is_an_error(stores: Stores, tmp_path: Path) -> None:
    store = await stores.new("memory", "target")
    with pytest.raises(KodeStoreError, match="not a directory"):
        await ops.import_kode_json(tmp_path / "nowhere", store)
