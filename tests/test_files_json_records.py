"""``JsonRecords``: the record half of ``JSONStore`` as atomic JSON files per agent."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio

from kodestore.errors import AgentNotFound, SerializationError
from kodestore.files.disk import DiskFiles
from kodestore.files.json_records import JsonRecords
from kodestore.models import AgentInfo, Bookmark, Message, Snapshot, ToolCallRecord

pytestmark = pytest.mark.asyncio

AWKWARD = "nul \x00 newline \n cr \r emoji 😀 \u2028 中"
NOW = 1_700_000_000_000


def info(agent_id: str = "a", message_count: int = 0) -> AgentInfo:
    return AgentInfo(
        agent_id=agent_id,
        template_id="tpl",
        created_at="2024-01-01T00:00:00.000Z",
        message_count=message_count,
    )


def messages(count: int) -> list[Message]:
    return [Message(role="user", content=[{"type": "text", "text": f"{AWKWARD} {i}"}]) for i in range(count)]


def tool_call(call_id: str) -> ToolCallRecord:
    return ToolCallRecord(
        id=call_id,
        name="bash",
        input={"cmd": AWKWARD},
        state="COMPLETED",
        approval={"required": False},
        agent_id="a",
    )


def snapshot(snapshot_id: str, label: str = "") -> Snapshot:
    return Snapshot(
        id=snapshot_id,
        messages=messages(1),
        last_sfp_index=0,
        last_bookmark=Bookmark(seq=1, timestamp=2),
        created_at="2024-01-01T00:00:00.000Z",
        metadata={"label": label},
    )


@pytest_asyncio.fixture
async def records(tmp_path: Path) -> AsyncIterator[JsonRecords]:
    backend = JsonRecords(tmp_path)
    await backend.open()
    yield backend
    await backend.close()


async def test_saves_need_info(records: JsonRecords, tmp_path: Path) -> None:
    with pytest.raises(AgentNotFound, match="'a' has no info"):
        await records.save_messages("a", messages(1), NOW)
    with pytest.raises(AgentNotFound):
        await records.save_tool_calls("a", [tool_call("t1")], NOW)
    with pytest.raises(AgentNotFound):
        await records.save_snapshot("a", snapshot("s1"), NOW)
    with pytest.raises(AgentNotFound):
        await records.save_turn("a", (messages(1), 0), None, None, NOW)
    assert list(tmp_path.iterdir()) == []
    assert (await records.load_info("a"), await records.exists("a")) == (None, False)
    assert (await records.load_messages("a"), await records.load_tool_calls("a")) == ([], [])
    assert (await records.list_snapshots("a"), await records.load_snapshot("a", "s1")) == ([], None)


async def test_round_trips_and_message_count(records: JsonRecords) -> None:
    await records.save_info(info(message_count=7), NOW)
    assert await records.load_info("a") == info(message_count=7).to_dict()
    assert await records.exists("a")
    await records.save_messages("a", messages(3), NOW)
    assert await records.load_messages("a") == [m.to_dict() for m in messages(3)]
    loaded = await records.load_info("a")
    assert loaded is not None and loaded["messageCount"] == 3
    await records.save_messages("a", messages(1), NOW)
    loaded = await records.load_info("a")
    assert loaded is not None and loaded["messageCount"] == 1


async def test_tool_calls_are_stored_without_agent_id(records: JsonRecords, tmp_path: Path) -> None:
    await records.save_info(info(), NOW)
    await records.save_tool_calls("a", [tool_call("t2"), tool_call("t1")], NOW)
    loaded = await records.load_tool_calls("a")
    assert [r["id"] for r in loaded] == ["t2", "t1"]
    assert all("agentId" not in r for r in loaded)
    assert loaded[0]["input"] == {"cmd": AWKWARD}
    assert b"agentId" not in (tmp_path / "a" / "tool-calls.json").read_bytes()
    with pytest.raises(ValueError, match="duplicate tool call id 't1'"):
        await records.save_tool_calls("a", [tool_call("t1"), tool_call("t1")], NOW)


async def test_save_turn_writes_info_then_messages_then_tool_calls(records: JsonRecords) -> None:
    await records.save_turn("a", (messages(2), 0), ([tool_call("t1")], 0), info(message_count=0), NOW)
    loaded = await records.load_info("a")
    assert loaded is not None and loaded["messageCount"] == 2  # the messages' save came after the info
    assert len(await records.load_messages("a")) == 2
    assert [r["id"] for r in await records.load_tool_calls("a")] == ["t1"]
    await records.save_turn("a", None, None, None, NOW)
    assert len(await records.load_messages("a")) == 2


async def test_snapshots_upsert_in_first_saved_order(records: JsonRecords) -> None:
    await records.save_info(info(), NOW)
    for snapshot_id in ("s2", "s1", "s3"):
        await records.save_snapshot("a", snapshot(snapshot_id), NOW)
    await records.save_snapshot("a", snapshot("s1", label="updated"), NOW)
    listed = await records.list_snapshots("a")
    assert [s["id"] for s in listed] == ["s2", "s1", "s3"]
    assert listed[1]["metadata"] == {"label": "updated"}
    assert await records.load_snapshot("a", "s1") == snapshot("s1", label="updated").to_dict()
    assert await records.load_snapshot("a", "nope") is None


async def test_list_agents_by_prefix(records: JsonRecords, tmp_path: Path) -> None:
    for agent_id in ("team-b", "team-a", "solo", "team-%"):
        await records.save_info(info(agent_id), NOW)
    (tmp_path / "team-no-info").mkdir()
    assert await records.list_agents(None) == ["solo", "team-%", "team-a", "team-b"]
    assert await records.list_agents("team-") == ["team-%", "team-a", "team-b"]
    assert await records.list_agents("team-%") == ["team-%"]
    assert await records.list_agents("x") == []
    assert await JsonRecords(tmp_path / "missing").list_agents(None) == []


@pytest.mark.parametrize("records_first", [True, False])
async def test_deleting_both_halves_leaves_only_the_tombstone(tmp_path: Path, records_first: bool) -> None:
    records, files = JsonRecords(tmp_path), DiskFiles(tmp_path)
    await records.save_turn("a", (messages(1), 0), ([tool_call("t1")], 0), info(), NOW)
    await records.save_snapshot("a", snapshot("s1"), NOW)
    await files.append_events("a", {"cursor": 1, "bookmark": {"seq": 1, "timestamp": 1}, "event": {}})
    await files.save_todos("a", {"todos": []})
    await files.append_history("a", "windows", {"id": "w"})
    await records.save_info(info("b"), NOW)
    (tmp_path / "a" / ".info.json.0badc0ffee00.tmp").write_text("{")  # left by a crashed write
    halves = [records.delete("a", NOW), files.delete_agent("a", NOW)]
    for delete in halves if records_first else halves[::-1]:
        await delete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert [p.name for p in (tmp_path / "a").iterdir()] == [".deleted"]
    assert await records.list_agents(None) == ["b"]
    assert await files.agent_ids() == ["b"]
    await files.close()


async def test_files_are_owner_only_and_whole(records: JsonRecords, tmp_path: Path) -> None:
    await records.save_turn("a", (messages(2), 0), ([tool_call("t1")], 0), info(), NOW)
    await records.save_snapshot("a", snapshot("s1"), NOW)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["info.json", "messages.json", "snapshots.json", "tool-calls.json"]
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    for name in names:
        path = tmp_path / "a" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        orjson.loads(path.read_bytes())


async def test_concurrent_saves_of_one_agent_lose_nothing(records: JsonRecords) -> None:
    await records.save_info(info(), NOW)
    await asyncio.gather(
        *(records.save_snapshot("a", snapshot(f"s{i}"), NOW) for i in range(20)),
        *(records.save_messages("a", messages(i), NOW) for i in range(1, 6)),
    )
    assert sorted(s["id"] for s in await records.list_snapshots("a")) == sorted(f"s{i}" for i in range(20))
    loaded = await records.load_info("a")
    assert loaded is not None and loaded["messageCount"] == len(await records.load_messages("a"))


async def test_unserialisable_message_writes_nothing(records: JsonRecords) -> None:
    await records.save_info(info(), NOW)
    await records.save_messages("a", messages(1), NOW)
    bad = [Message(role="user", content=[{"type": "text", "text": {1, 2}}])]
    with pytest.raises(SerializationError, match=r"messages\[0\]\.content\[0\]\.text"):
        await records.save_messages("a", bad, NOW)
    assert len(await records.load_messages("a")) == 1
