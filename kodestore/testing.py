"""The contract suite every backend must pass, shipped with the package.

A new backend proves itself by subclassing the test classes below in a pytest module that provides
a ``store`` fixture yielding an open store of that backend::

    class TestMyBackend(StoreContract, ExtendedContract): ...

The sample builders make realistic SDK-shaped data for tests, demos and benchmarks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kodestore.errors import AgentDeleted, AgentNotFound, InvalidAgentId, LockTimeout, StoreClosed
from kodestore.models import (
    AgentInfo,
    Bookmark,
    CompressionRecord,
    HistoryWindow,
    MediaCacheRecord,
    Message,
    RecoveredFile,
    Snapshot,
    Timeline,
    TodoSnapshot,
    ToolCallRecord,
)
from kodestore.validation import ms_to_iso, now_ms

BAD_AGENT_IDS = ["", "../etc", "a/b", "a\\b", ".", "..", "x" * 201, "tab\there", "nul\x00", "new\nline"]


# ---- sample data ---------------------------------------------------------------------------------


def sample_info(agent_id: str, template_id: str = "tpl-default", **extra: Any) -> AgentInfo:
    return AgentInfo(
        agent_id=agent_id,
        template_id=template_id,
        created_at="2026-11-01T10:00:00.000Z",
        lineage=[],
        config_version="v1",
        message_count=0,
        last_sfp_index=-1,
        metadata={"userId": "u1", "team": "core"},
        **extra,
    )


def sample_message(index: int, role: str | None = None, text: str | None = None) -> Message:
    role = role or ("user" if index % 2 == 0 else "assistant")
    content: list[dict[str, Any]] = [{"type": "text", "text": text or f"message {index}"}]
    if role == "assistant":
        content.append(
            {"type": "tool_use", "id": f"call-{index}", "name": "fs_read", "input": {"path": "a.txt"}}
        )
    return Message(role=role, content=content, metadata={"turn": index // 2})


def sample_tool_call(index: int, state: str = "COMPLETED", name: str = "fs_read") -> ToolCallRecord:
    failed = state == "FAILED"
    return ToolCallRecord(
        id=f"call-{index}",
        name=name,
        input={"path": f"file-{index}.txt"},
        state=state,
        approval={"required": index % 3 == 0, "decision": "allow"},
        result=None if failed else {"ok": True, "bytes": index},
        error="boom" if failed else None,
        is_error=failed,
        started_at=1_700_000_000_000 + index,
        completed_at=1_700_000_000_100 + index,
        duration_ms=100,
        created_at=1_700_000_000_000 + index,
        updated_at=1_700_000_000_100 + index,
        audit_trail=[{"state": state, "timestamp": 1_700_000_000_100 + index}],
    )


def sample_timeline(seq: int, channel: str = "progress", kind: str = "text_chunk") -> Timeline:
    return Timeline(
        cursor=seq,
        bookmark=Bookmark(seq=seq, timestamp=1_700_000_000_000 + seq),
        event={"channel": channel, "type": kind, "delta": f"chunk {seq}"},
    )


def sample_snapshot(snapshot_id: str, messages: list[Message]) -> Snapshot:
    return Snapshot(
        id=snapshot_id,
        messages=messages,
        last_sfp_index=len(messages) - 1,
        last_bookmark=Bookmark(seq=len(messages), timestamp=1_700_000_000_000),
        created_at="2026-11-01T10:05:00.000Z",
        metadata={"label": snapshot_id},
    )


async def _collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


# ---- the Store contract --------------------------------------------------------------------------


class StoreContract:
    """Every backend: runtime state, events, history, media, snapshots, metadata, validation."""

    async def test_messages_round_trip_and_replace(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        history = [sample_message(i) for i in range(5)]
        await store.save_messages("a1", history)
        assert await store.load_messages("a1") == history
        await store.save_messages("a1", history[:2])
        assert await store.load_messages("a1") == history[:2]
        assert (await store.load_info("a1")).message_count == 2

    async def test_save_messages_accepts_sdk_dicts(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1").to_dict())
        await store.save_messages("a1", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        assert (await store.load_messages("a1"))[0].content == [{"type": "text", "text": "hi"}]

    async def test_runtime_saves_need_info(self, store: Any) -> None:
        with pytest.raises(AgentNotFound):
            await store.save_messages("ghost", [sample_message(0)])
        with pytest.raises(AgentNotFound):
            await store.save_tool_call_records("ghost", [sample_tool_call(0)])
        with pytest.raises(AgentNotFound):
            await store.save_snapshot("ghost", sample_snapshot("s1", []))
        assert not await store.exists("ghost")

    async def test_loads_of_unknown_agent_are_empty(self, store: Any) -> None:
        assert await store.load_messages("nobody") == []
        assert await store.load_tool_call_records("nobody") == []
        assert await store.load_todos("nobody") is None
        assert await _collect(store.read_events("nobody")) == []
        assert await store.load_history_windows("nobody") == []
        assert await store.load_compression_records("nobody") == []
        assert await store.load_recovered_files("nobody") == []
        assert await store.load_media_cache("nobody") == []
        assert await store.load_snapshot("nobody", "s1") is None
        assert await store.list_snapshots("nobody") == []
        assert await store.load_info("nobody") is None
        assert not await store.exists("nobody")

    async def test_tool_call_records_replace(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        records = [sample_tool_call(i, "FAILED" if i == 1 else "COMPLETED") for i in range(3)]
        await store.save_tool_call_records("a1", records)
        assert await store.load_tool_call_records("a1") == records
        records[0].state = "SEALED"
        await store.save_tool_call_records("a1", [records[2], records[0]])
        assert await store.load_tool_call_records("a1") == [records[2], records[0]]

    async def test_duplicate_tool_call_ids_are_refused(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        await store.save_tool_call_records("a1", [sample_tool_call(1)])
        with pytest.raises(ValueError, match="duplicate"):
            await store.save_tool_call_records("a1", [sample_tool_call(2), sample_tool_call(2)])
        assert await store.load_tool_call_records("a1") == [sample_tool_call(1)]

    async def test_todos(self, store: Any) -> None:
        todos = TodoSnapshot(
            todos=[{"id": "t1", "title": "write", "status": "pending"}], version=3, updated_at=5
        )
        await store.save_todos("a1", todos)
        assert await store.load_todos("a1") == todos

    async def test_events_in_order_with_since_and_channel(self, store: Any) -> None:
        channels = ["progress", "control", "monitor"]
        events = [sample_timeline(seq, channels[seq % 3]) for seq in range(1, 31)]
        for event in events:
            await store.append_event("a1", event)
        assert await _collect(store.read_events("a1")) == events
        assert await _collect(store.read_events("a1", since=Bookmark(seq=20, timestamp=0))) == events[20:]
        assert await _collect(store.read_events("a1", channel="control")) == [
            e for e in events if e.event["channel"] == "control"
        ]
        since_and_channel = store.read_events("a1", since=Bookmark(seq=10, timestamp=0), channel="monitor")
        assert await _collect(since_and_channel) == [
            e for e in events if e.bookmark.seq > 10 and e.event["channel"] == "monitor"
        ]

    async def test_bad_events_are_refused_before_writing(self, store: Any) -> None:
        with pytest.raises(ValueError, match="channel"):
            await store.append_event("a1", Timeline(1, Bookmark(1, 1), {"channel": "nope", "type": "x"}))
        with pytest.raises(ValueError):
            await store.append_event("a1", {"cursor": 1, "event": {"channel": "progress"}})
        with pytest.raises(ValueError, match="channel"):
            store.read_events("a1", channel="bogus")
        assert await _collect(store.read_events("a1")) == []

    async def test_history_files_oldest_first(self, store: Any) -> None:
        windows = [
            HistoryWindow(f"w{i}", [sample_message(i)], [sample_timeline(i)], {"messageCount": 1}, i)
            for i in range(3)
        ]
        for window in windows:
            await store.save_history_window("a1", window)
        assert await store.load_history_windows("a1") == windows
        record = CompressionRecord("c1", "w0", {"model": "m"}, "summary", 0.25, ["a.txt"], 7)
        await store.save_compression_record("a1", record)
        assert await store.load_compression_records("a1") == [record]
        content = "line1\r\nline2\n\x00\ttab \U0001f600 é\u2028end"
        recovered = RecoveredFile(path="src/a.py", content=content, mtime=1, timestamp=2)
        await store.save_recovered_file("a1", recovered)
        assert (await store.load_recovered_files("a1"))[0].content == content

    async def test_media_cache_replaces(self, store: Any) -> None:
        records = [MediaCacheRecord("k1", "openai", "image/png", 10, file_id="f1", created_at=1)]
        await store.save_media_cache("a1", records)
        assert await store.load_media_cache("a1") == records
        await store.save_media_cache("a1", [])
        assert await store.load_media_cache("a1") == []

    async def test_snapshots_upsert_and_list(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        first = sample_snapshot("s1", [sample_message(0)])
        second = sample_snapshot("s2", [sample_message(0), sample_message(1)])
        await store.save_snapshot("a1", first)
        await store.save_snapshot("a1", second)
        replaced = sample_snapshot("s1", [])
        await store.save_snapshot("a1", replaced)
        assert await store.load_snapshot("a1", "s1") == replaced
        assert [s.id for s in await store.list_snapshots("a1")] == ["s1", "s2"]
        assert await store.load_snapshot("a1", "missing") is None

    async def test_info_upsert_keeps_runtime_state(self, store: Any) -> None:
        info = sample_info("a1")
        await store.save_info("a1", info)
        await store.save_messages("a1", [sample_message(0)])
        await store.save_tool_call_records("a1", [sample_tool_call(0)])
        info.breakpoint = "READY"
        info.message_count = 1
        await store.save_info("a1", info)
        assert await store.load_info("a1") == info
        assert len(await store.load_messages("a1")) == 1
        assert len(await store.load_tool_call_records("a1")) == 1

    async def test_info_agent_id_must_match(self, store: Any) -> None:
        with pytest.raises(ValueError, match="differs"):
            await store.save_info("a1", sample_info("a2"))
        assert await store.load_info("a1") is None

    async def test_delete_removes_everything_and_is_idempotent(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        await store.save_messages("a1", [sample_message(0)])
        await store.save_tool_call_records("a1", [sample_tool_call(0)])
        await store.save_snapshot("a1", sample_snapshot("s1", []))
        await store.save_todos("a1", TodoSnapshot([], 1, 1))
        await store.append_event("a1", sample_timeline(1))
        await store.save_media_cache("a1", [MediaCacheRecord("k", "p", "m", 1)])
        await store.delete("a1")
        await store.delete("a1")
        assert not await store.exists("a1")
        assert await store.load_messages("a1") == []
        assert await store.load_tool_call_records("a1") == []
        assert await store.list_snapshots("a1") == []
        assert await store.load_todos("a1") is None
        assert await _collect(store.read_events("a1")) == []
        assert await store.load_media_cache("a1") == []
        assert await store.list() == []

    async def test_deletion_sticks(self, store: Any) -> None:
        info = sample_info("a1")
        await store.save_info("a1", info)
        await store.append_event("a1", sample_timeline(1))
        await store.delete("a1")
        # a process that still held the agent writes late: nothing comes back
        with pytest.raises(AgentDeleted):
            await store.save_info("a1", info)
        with pytest.raises(AgentDeleted):
            await store.append_event("a1", sample_timeline(2))
        with pytest.raises(AgentDeleted):
            await store.save_todos("a1", TodoSnapshot([], 1, 1))
        with pytest.raises(AgentNotFound):
            await store.save_messages("a1", [sample_message(0)])
        assert await store.list() == [] and await _collect(store.read_events("a1")) == []
        # an info created after the deletion re-creates the agent, from scratch
        fresh = sample_info("a1")
        fresh.created_at = ms_to_iso(now_ms() + 1000)
        await store.save_info("a1", fresh)
        await store.append_event("a1", sample_timeline(5))
        assert [e.bookmark.seq for e in await _collect(store.read_events("a1"))] == [5]
        # clear_tombstone forgets a deletion on purpose (restore, migrate): old data may come back
        await store.delete("a1")
        await store.clear_tombstone("a1")
        await store.save_info("a1", info)
        assert await store.load_info("a1") == info

    async def test_list_with_prefix(self, store: Any) -> None:
        for agent_id in ["team-a-1", "team-a-2", "team-b-1", "team_a%"]:
            await store.save_info(agent_id, sample_info(agent_id))
        assert await store.list() == ["team-a-1", "team-a-2", "team-b-1", "team_a%"]
        assert await store.list(prefix="team-a") == ["team-a-1", "team-a-2"]
        assert await store.list(prefix="team_a%") == ["team_a%"]
        assert await store.list(prefix="zzz") == []

    @pytest.mark.parametrize("bad_id", BAD_AGENT_IDS)
    async def test_invalid_agent_ids_rejected_everywhere(self, store: Any, bad_id: str) -> None:
        calls = [
            store.save_info(bad_id, sample_info("x")),
            store.load_info(bad_id),
            store.save_messages(bad_id, []),
            store.load_messages(bad_id),
            store.append_event(bad_id, sample_timeline(1)),
            store.save_todos(bad_id, TodoSnapshot([], 1, 1)),
            store.exists(bad_id),
            store.delete(bad_id),
        ]
        for call in calls:
            with pytest.raises(InvalidAgentId):
                await call
        with pytest.raises(InvalidAgentId):
            store.read_events(bad_id)
        assert await store.list() == []

    async def test_nul_and_unicode_round_trip(self, store: Any) -> None:
        agent_id = "unicode-é-\U0001f600"
        info = sample_info(agent_id, template_id="tpl\x00nul")
        info.metadata = {"key\x00with-nul": "value\x00", "emoji": "\U0001f600"}
        await store.save_info(agent_id, info)
        message = Message(
            "user", [{"type": "text", "text": "a\x00b\\u0000c\ue000d", "k\x00": 1}], {"m\x00": "\x00"}
        )
        await store.save_messages(agent_id, [message])
        record = sample_tool_call(1)
        record.id = "call\x00nul"
        record.input = {"q\x00": "\x00\x00"}
        await store.save_tool_call_records(agent_id, [record])
        snapshot = sample_snapshot("snap\x00", [message])
        await store.save_snapshot(agent_id, snapshot)
        info.message_count = 1  # save_messages keeps the info's count current
        assert await store.load_info(agent_id) == info
        assert await store.load_messages(agent_id) == [message]
        assert await store.load_tool_call_records(agent_id) == [record]
        assert await store.load_snapshot(agent_id, "snap\x00") == snapshot
        await store.append_event(
            agent_id, Timeline(1, Bookmark(1, 1), {"channel": "progress", "type": "t\x00"})
        )
        assert (await _collect(store.read_events(agent_id)))[0].event["type"] == "t\x00"

    async def test_unserialisable_value_names_its_field(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        bad = Message("user", [{"type": "text", "text": "ok"}, {"type": "image", "data": object()}])
        with pytest.raises(ValueError, match=r"messages\[1\]\.content\[1\]\.data"):
            await store.save_messages("a1", [sample_message(0), bad])
        assert await store.load_messages("a1") == []

    async def test_closed_store_refuses_calls(self, store: Any) -> None:
        await store.close()
        with pytest.raises(StoreClosed):
            await store.load_info("a1")
        with pytest.raises(StoreClosed):
            await store.save_messages("a1", [])
        with pytest.raises(StoreClosed):
            store.read_events("a1")

    async def test_save_turn_is_the_separate_calls_in_one(self, store: Any) -> None:
        info = sample_info("a1")
        messages = [sample_message(i) for i in range(4)]
        records = [sample_tool_call(1)]
        events = [sample_timeline(i) for i in range(1, 4)]
        await store.save_turn("a1", info=info, messages=messages, tool_call_records=records, events=events)
        assert await store.load_messages("a1") == messages
        assert await store.load_tool_call_records("a1") == records
        assert await _collect(store.read_events("a1")) == events
        assert (await store.load_info("a1")).message_count == 4


# ---- queries and the extended store -------------------------------------------------------------


class QueryContract:
    """Basic query behaviour; the exhaustive oracle comparisons live in the project's tests."""

    async def test_message_created_at_stays_put(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        await store.save_messages("a1", [sample_message(0)])
        first = await store.query_messages(agent_id="a1")
        await asyncio.sleep(0.01)
        await store.save_messages("a1", [sample_message(0), sample_message(1)])
        later = await store.query_messages(agent_id="a1")
        assert [m.seq for m in later] == [1, 0]
        assert later[1].created_at == first[0].created_at
        assert later[0].created_at > first[0].created_at

    async def test_moved_messages_keep_their_time_repeated_ones_are_new(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        hello, reply = sample_message(0, text="hello"), sample_message(1, text="reply")
        await store.save_messages("a1", [hello, reply])
        first = {m.seq: m.created_at for m in await store.query_messages(agent_id="a1")}
        await asyncio.sleep(0.01)
        summary = sample_message(0, text="summary of earlier turns")
        await store.save_messages("a1", [summary, reply, hello])  # compacted, and "hello" said again
        later = {m.seq: m.created_at for m in await store.query_messages(agent_id="a1")}
        assert later[1] == first[1]  # "reply" stayed at seq 1
        assert later[0] > first[0] and later[2] == first[0]  # "hello" left seq 0 and lands at seq 2
        await store.save_messages("a1", [summary, reply, hello, hello])
        again = {m.seq: m.created_at for m in await store.query_messages(agent_id="a1")}
        assert again[3] > first[0]  # a repeat of a message still in place is a new message

    async def test_invalid_filters_raise_value_error(self, store: Any) -> None:
        bad_filters: list[dict[str, Any]] = [
            {"limit": -1},
            {"offset": -5},
            {"sort_by": "agent_id; DROP TABLE agents"},
            {"sort_order": "sideways"},
            {"created_after": "yesterday"},
            {"template_id": 3},
        ]
        for bad in bad_filters:
            with pytest.raises(ValueError):
                await store.query_sessions(**bad)
        with pytest.raises(ValueError):
            await store.query_tool_calls(is_error="yes")
        with pytest.raises(TypeError):
            await store.query_messages(colour="red")


class ExtendedContract:
    async def test_health_check(self, store: Any) -> None:
        status = await store.health_check()
        assert status.healthy and status.database.connected and status.file_system.writable
        assert status.database.latency_ms is not None and status.database["connected"]

    async def test_consistency_of_a_clean_agent(self, store: Any) -> None:
        info = sample_info("a1")
        info.last_bookmark = Bookmark(3, 3)
        await store.save_info("a1", info)
        await store.save_messages("a1", [sample_message(0)])
        for seq in range(1, 4):
            await store.append_event("a1", sample_timeline(seq))
        result = await store.check_consistency("a1")
        assert result.consistent, result.issues

    async def test_consistency_reports_bookmark_beyond_log_and_orphans(self, store: Any) -> None:
        info = sample_info("a1")
        info.last_bookmark = Bookmark(50, 3)
        await store.save_info("a1", info)
        await store.append_event("a1", sample_timeline(1))
        await store.append_event("orphan", sample_timeline(1))
        result = await store.check_consistency()
        assert not result.consistent
        assert any("bookmark" in issue for issue in result.issues)
        assert any("orphan" in issue and "without an agent" in issue for issue in result.issues)

    async def test_metrics_count_operations(self, store: Any) -> None:
        await store.save_info("a1", sample_info("a1"))
        await store.load_info("a1")
        await store.query_sessions()
        await store.delete("a1")
        metrics = await store.get_metrics()
        assert metrics.operations.saves >= 1 and metrics.operations.loads >= 1
        assert metrics.operations.queries >= 1 and metrics.operations.deletes >= 1
        assert metrics.performance.max_latency_ms >= metrics.performance.p50_latency_ms > 0
        assert metrics.storage.total_agents == 0

    async def test_lock_is_exclusive_and_not_reentrant(self, store: Any) -> None:
        release = await store.acquire_agent_lock("a1", timeout_ms=1000)
        with pytest.raises(LockTimeout):
            await store.acquire_agent_lock("a1", timeout_ms=50)
        other = await store.acquire_agent_lock("a2", timeout_ms=50)
        await release()
        await other()
        async with store.agent_lock("a1", timeout_ms=50):
            pass

    async def test_fork_copies_state_and_lineage(self, store: Any) -> None:
        await store.save_info("src", sample_info("src"))
        messages = [sample_message(i) for i in range(4)]
        await store.save_messages("src", messages)
        await store.save_tool_call_records("src", [sample_tool_call(1)])
        await store.save_todos("src", TodoSnapshot([{"id": "t"}], 1, 1))
        ids = await store.batch_fork("src", 2)
        assert len(ids) == 2 and all(i.startswith("agt-") for i in ids)
        for fork_id in ids:
            info = await store.load_info(fork_id)
            assert info.lineage == ["src"] and info.template_id == "tpl-default"
            assert await store.load_messages(fork_id) == messages
            assert len(await store.load_tool_call_records(fork_id)) == 1
            assert await store.load_todos(fork_id) == TodoSnapshot([{"id": "t"}], 1, 1)
        partial = await store.fork(ids[0], up_to_message=2)
        assert await store.load_messages(partial) == messages[:2]
        assert await store.get_lineage(partial) == {"ancestors": ["src", ids[0]], "descendants": []}
        lineage = await store.get_lineage("src")
        assert lineage["ancestors"] == [] and set(lineage["descendants"]) == {*ids, partial}
        with pytest.raises(AgentNotFound):
            await store.fork("ghost")
