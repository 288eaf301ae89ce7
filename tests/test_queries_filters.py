"""The exact meaning of each filter, on every backend: the corners a random oracle may not reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import kodestore.facade
from kodestore import AgentInfo, Message, ToolCallState
from kodestore.testing import sample_tool_call
from kodestore.validation import ms_to_iso

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# (stored metadata, wanted metadata, matches?) — jsonb equality per wanted key, whatever the backend
METADATA_CASES: list[tuple[Any, dict[str, Any], bool]] = [
    ({"a": 1}, {"a": 1.0}, True),
    ({"a": 1}, {"a": True}, False),
    ({"a": "1"}, {"a": 1}, False),
    ({"a": None}, {"a": None}, True),
    ({}, {"a": None}, False),
    ({"a": {"x": 1, "y": [1, 2]}}, {"a": {"y": [1, 2.0], "x": 1}}, True),
    ({"a": {"x": 1, "y": [1, 2]}}, {"a": {"x": 1}}, False),  # nested objects: equal, not contained
    ({"a": [1, 2]}, {"a": [2, 1]}, False),
    ({"a": [1, 2, 3]}, {"a": [1, 2]}, False),
    ({"a": "x\x00y"}, {"a": "x\x00z"}, False),
    ({"a": "x\x00y"}, {"a": "x\x00y"}, True),
    ({'q"k': "v"}, {'q"k': "v"}, True),
    ({'q"k': "v"}, {'q"k': "w"}, False),
    ({"a": 1, "b": 2}, {"a": 1}, True),
    ({"a": {"b": 1}, "a.b": 2}, {"a.b": 2}, True),
    ({"a": []}, {"a": {}}, False),
    ({"a": [{"k": [None]}]}, {"a": [{"k": [None]}]}, True),
    ({"a": False}, {"a": 0}, False),
    ({"é": "\U0001f600"}, {"é": "\U0001f600"}, True),
    (None, {"a": 1}, False),
]


def info(agent_id: str, metadata: Any = None, created_at: str = "2026-01-01T00:00:00.000Z") -> AgentInfo:
    return AgentInfo(agent_id, "tpl", created_at, metadata=metadata)


@pytest.mark.parametrize(("have", "want", "matches"), METADATA_CASES)
async def test_metadata_filter_is_json_equality_per_key(
    store: Any, have: Any, want: Any, matches: bool
) -> None:
    await store.save_info("m", info("m", have))
    await store.save_info("other", info("other", {"zzz": 1}))
    assert [s.agent_id for s in await store.query_sessions(metadata=want)] == (["m"] if matches else [])


async def test_user_id_is_a_string_equal_to_user_id_or_user(store: Any) -> None:
    cases = {
        "s1": {"userId": "u1"},
        "s2": {"user": "u1"},
        "s3": {"userId": 1},
        "s4": {"userId": ["u1"]},
        "s5": {"userId": {"id": "u1"}},
        "s6": {"userId": "u1\x00evil"},
        "s7": {"owner": "u1"},
        "s8": None,
        "s9": {"user": "1"},
    }
    for agent_id, metadata in cases.items():
        await store.save_info(agent_id, info(agent_id, metadata))

    async def users(user_id: str) -> set[str]:
        return {s.agent_id for s in await store.query_sessions(user_id=user_id)}

    assert await users("u1") == {"s1", "s2"}
    assert await users("1") == {"s9"}
    assert await users("u1\x00evil") == {"s6"}
    assert await users("u") == set()


async def test_content_type_matches_object_blocks_of_that_type_only(store: Any) -> None:
    await store.save_info("a", info("a"))
    history = [
        Message("user", [{"type": "text", "text": "hi"}, "image", {"type": 1}]),
        Message("assistant", [{"kind": "image"}, {"type": "image", "source": {}}]),
        Message("user", [{"type": "ty\x00pe"}]),
        Message("user", []),
    ]
    await store.save_messages("a", history)

    async def seqs(content_type: str) -> list[int]:
        return [m.seq for m in await store.query_messages(content_type=content_type)]

    assert await seqs("text") == [0]
    assert await seqs("image") == [1]
    assert await seqs("1") == []
    assert await seqs("ty\x00pe") == [2]
    assert await seqs("ty") == []


async def test_time_bounds_are_exact_for_ms_and_datetimes(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for offset in range(3):
        agent_id = f"a{offset}"
        await store.save_info(agent_id, info(agent_id, created_at=ms_to_iso(T0 + offset)))
        monkeypatch.setattr(kodestore.facade, "now_ms", lambda offset=offset: T0 + offset)
        await store.save_messages(agent_id, [Message("user", [{"type": "text", "text": agent_id}])])
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=1)
    bounds: list[tuple[Any, set[int]]] = [
        (T0 + 1, {1, 2}),
        (moment, {1, 2}),
        (moment.replace(tzinfo=None), {1, 2}),  # naive is UTC
        (moment.astimezone(timezone(timedelta(hours=-7))), {1, 2}),
        (moment + timedelta(microseconds=1), {2}),  # between two milliseconds
        (moment - timedelta(microseconds=1), {1, 2}),
    ]
    for bound, newer in bounds:
        sessions = await store.query_sessions(created_after=bound)
        assert {int(s.agent_id[1]) for s in sessions} == newer, bound
        older = {int(s.agent_id[1]) for s in await store.query_sessions(created_before=bound)}
        assert older == {0, 1, 2} - newer, bound
        messages = await store.query_messages(created_after=bound)
        assert {int(m.agent_id[1]) for m in messages} == newer, bound


async def test_tool_call_flags_and_states(store: Any) -> None:
    await store.save_info("a", info("a"))
    records = [sample_tool_call(i, state) for i, state in enumerate(["FAILED", "COMPLETED", "DENIED"])]
    records[2].approval = {"required": "yes"}  # truthy but not true
    records[1].is_error = None
    await store.save_tool_call_records("a", records)

    async def ids(**filters: Any) -> list[str]:
        return [r.id for r in await store.query_tool_calls(**filters)]

    assert await ids(state=ToolCallState.FAILED) == ["call-0"]
    assert await ids(state="DENIED") == ["call-2"]
    assert await ids(is_error=True) == ["call-0"]
    assert await ids(is_error=False) == ["call-2", "call-1"]
    assert await ids(has_approval=True) == ["call-0"]  # index 0 % 3 == 0: required is True
    assert await ids(has_approval=False) == ["call-2", "call-1"]
    assert all(r.agent_id == "a" for r in await store.query_tool_calls())


async def test_ties_break_by_code_point_of_ids(store: Any) -> None:
    """Text keys order by code point on every backend, NUL and private-use characters included."""
    agent_ids = ["b", "a\ue000", "a", "A", "é", "a-"]
    for agent_id in agent_ids:
        await store.save_info(agent_id, info(agent_id))
    sessions = await store.query_sessions(sort_order="asc")
    assert [s.agent_id for s in sessions] == sorted(agent_ids)
    call_ids = ["c1", "c\x00", "c", "c\ue000", "C"]
    records = [sample_tool_call(0) for _ in call_ids]
    for record, call_id in zip(records, call_ids, strict=True):
        record.id = call_id
    await store.save_tool_call_records("a", records)
    assert [r.id for r in await store.query_tool_calls()] == sorted(call_ids, reverse=True)
