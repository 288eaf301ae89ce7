"""Arguments are checked before any SQL runs, and every refusal names the argument; cursors too."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from kodestore import MemoryStore, SessionInfo, ToolCallState
from kodestore.db.queries import cursor_of
from kodestore.testing import sample_info, sample_message, sample_tool_call


@pytest.fixture
async def filled() -> AsyncIterator[Any]:
    async with MemoryStore() as store:
        for agent_id in ("a", "b", "c"):
            await store.save_info(agent_id, sample_info(agent_id))
            await store.save_messages(agent_id, [sample_message(i) for i in range(3)])
            await store.save_tool_call_records(agent_id, [sample_tool_call(i) for i in range(3)])
        yield store


BAD_COMMON: list[tuple[dict[str, Any], str]] = [
    ({"limit": -1}, "limit"),
    ({"limit": True}, "limit"),
    ({"limit": "10"}, "limit"),
    ({"limit": 2.0}, "limit"),
    ({"limit": None}, "limit"),
    ({"limit": 2**63}, "limit"),
    ({"offset": -5}, "offset"),
    ({"offset": False}, "offset"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"created_after": True}, "created_after"),
    ({"created_before": 1.5}, "created_before"),
    ({"created_before": 2**70}, "created_before"),
    ({"agent_id": 7}, "agent id"),
    ({"agent_id": "../x"}, "agent id"),
    ({"after": 42}, "after"),
    ({"after": "garbage"}, "after"),
]
BAD_SESSIONS = [
    ({"sort_by": "agent_id; DROP TABLE agents"}, "sort_by"),
    ({"sort_by": None}, "sort_by"),
    ({"sort_order": "sideways"}, "sort_order"),
    ({"template_id": 3}, "template_id"),
    ({"user_id": ["u1"]}, "user_id"),
    ({"metadata": [("a", 1)]}, "metadata"),
    ({"metadata": {"a": object()}}, "metadata"),
    ({"metadata": {1: "x"}}, "metadata"),
]
BAD_MESSAGES = [({"role": 1}, "role"), ({"content_type": b"text"}, "content_type")]
BAD_TOOL_CALLS = [
    ({"tool_name": 3}, "tool_name"),
    ({"state": "FAILD"}, "state"),
    ({"state": 3}, "state"),
    ({"is_error": "yes"}, "is_error"),
    ({"is_error": 1}, "is_error"),
    ({"has_approval": 0}, "has_approval"),
]


@pytest.mark.parametrize(("query", "bad", "named"), [
    *(("query_sessions", b, n) for b, n in BAD_COMMON + BAD_SESSIONS),
    *(("query_messages", b, n) for b, n in BAD_COMMON + BAD_MESSAGES),
    *(("query_tool_calls", b, n) for b, n in BAD_COMMON + BAD_TOOL_CALLS),
])  # fmt: skip
async def test_bad_filters_raise_value_error_naming_the_argument(
    filled: Any, query: str, bad: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        await getattr(filled, query)(**bad)


async def test_unknown_filters_are_type_errors(filled: Any) -> None:
    for query in (filled.query_sessions, filled.query_messages, filled.query_tool_calls):
        with pytest.raises(TypeError):
            await query(colour="red")


async def test_stats_agent_id_is_validated(filled: Any) -> None:
    with pytest.raises(ValueError, match="agent id"):
        await filled.aggregate_stats("a/b")
    assert (await filled.aggregate_stats("nobody")).total_messages == 0


async def test_state_accepts_the_enum_and_its_name(filled: Any) -> None:
    by_enum = await filled.query_tool_calls(state=ToolCallState.COMPLETED)
    assert by_enum == await filled.query_tool_calls(state="COMPLETED") and len(by_enum) == 9


async def test_after_a_row_and_after_its_cursor_agree(filled: Any) -> None:
    for query in (filled.query_sessions, filled.query_messages, filled.query_tool_calls):
        first = await query(limit=2)
        by_row = await query(limit=100, after=first[-1])
        assert by_row == await query(limit=100, after=cursor_of(first[-1]))
        assert first + by_row == await query(limit=100)
        assert filled.cursor_of(first[-1]) == cursor_of(first[-1])


async def test_a_session_cursor_serves_any_sort(filled: Any) -> None:
    for sort_by in ("created_at", "updated_at", "message_count"):
        for sort_order in ("desc", "asc"):
            everything = await filled.query_sessions(sort_by=sort_by, sort_order=sort_order)
            after = await filled.query_sessions(
                sort_by=sort_by, sort_order=sort_order, after=cursor_of(everything[0])
            )
            assert after == everything[1:]


async def test_after_with_offset_is_refused(filled: Any) -> None:
    row = (await filled.query_messages(limit=1))[0]
    with pytest.raises(ValueError, match="offset"):
        await filled.query_messages(after=row, offset=1)
    assert await filled.query_messages(after=row, offset=0) == (await filled.query_messages())[1:]


async def test_rows_of_another_query_are_refused(filled: Any) -> None:
    message = (await filled.query_messages(limit=1))[0]
    session = (await filled.query_sessions(limit=1))[0]
    with pytest.raises(ValueError, match="after must be a SessionInfo"):
        await filled.query_sessions(after=message)
    with pytest.raises(ValueError, match="after: not a tool_call cursor"):
        await filled.query_tool_calls(after=cursor_of(session))
    record = (await filled.query_tool_calls(limit=1))[0]
    record.agent_id = None  # as loaded by load_tool_call_records, not from a query
    with pytest.raises(ValueError, match="after"):
        await filled.query_tool_calls(after=record)
    with pytest.raises(ValueError, match="cursor_of"):
        cursor_of({"agentId": "a"})  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_edited_or_truncated_cursors_are_refused(filled: Any) -> None:
    row = (await filled.query_messages(limit=1))[0]
    cursor = cursor_of(row)
    body, tag = cursor.split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload[1] -= 1  # an earlier created_at: a different page, if it were accepted
    forged = f"{_b64(orjson.dumps(payload))}.{tag}"
    for bad in [forged, cursor[:-3], body, "", ".", "é.é", cursor + "x", f"{_b64(b'[1,2')}.{tag}"]:
        with pytest.raises(ValueError, match="after"):
            await filled.query_messages(after=bad)


async def test_session_rows_with_a_bad_created_at_are_refused(filled: Any) -> None:
    row = (await filled.query_sessions(limit=1))[0]
    broken = SessionInfo(row.agent_id, row.template_id, "not a time", 1, -1)
    with pytest.raises(ValueError, match=r"after\.created_at"):
        await filled.query_sessions(after=broken)
