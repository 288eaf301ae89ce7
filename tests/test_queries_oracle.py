"""Every query and stat against a brute-force Python oracle, on every backend.

Hypothesis builds random agents, histories and tool-call records whose timestamps collide on purpose
(a handful of instants shared by every agent and save, through a controlled clock), then compares
random filter combinations, pages and stats with what a direct computation over the same data says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kodestore.facade
from kodestore import (
    AgentInfo,
    Bookmark,
    Message,
    MessageRecord,
    SessionInfo,
    Snapshot,
    ToolCallRecord,
    ToolCallState,
)
from kodestore.db.queries import cursor_of
from kodestore.validation import ms_to_iso

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ids and texts that sort differently by code point than by any locale, with a NUL here and there
AGENT_IDS = ["a", "b", "ab", "B", "a-1", "é", "zé", "agt-\U0001f600", "A_1"]
TEMPLATES = ["coder", "writer", "t\x00nul"]
USERS = ["u1", "u2", "u\x00x"]
ROLES = ["user", "assistant", "system"]
BLOCK_TYPES = ["text", "tool_use", "tool_result", "image", "ty\x00pe"]
TOOL_NAMES = ["fs_read", "bash_run", "web"]
TOOL_IDS = ["c1", "c2", "c10", "C", "ç", "c-"]
META_KEYS = ["team", "n", "tags", "a.b"]
# equal-but-differently-written values (1 / 1.0, reordered objects) and unequal look-alikes (1 / True / "1")
META_VALUES: list[Any] = [
    "x",
    "1",
    1,
    1.0,
    2.5,
    True,
    False,
    None,
    [1, 2],
    [2, 1],
    [1.0, 2],
    {"a": 1, "b": {"c": "d\x00"}},
    {"b": {"c": "d\x00"}, "a": 1.0},
    {"a": 1},
    {},
]
BASE_MS = 1_767_225_600_000  # 2026-01-01
SAVE_TIMES = [BASE_MS + 10, BASE_MS + 11, BASE_MS + 12]  # the clock of every save: many ties
CREATED_TIMES = [BASE_MS, BASE_MS + 1, BASE_MS + 2]  # sessions' createdAt
TOOL_TIMES = [BASE_MS + 5, BASE_MS + 6, BASE_MS + 7]  # tool-call records' own createdAt

RUNS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ---- the data ------------------------------------------------------------------------------------


@dataclass
class AgentSpec:
    agent_id: str
    template_id: str
    created_ms: int
    metadata: dict[str, Any] | None
    info_time: int
    saves: list[tuple[int, list[Message]]]
    records: list[ToolCallRecord]
    records_time: int | None
    snapshot_times: list[int]


@st.composite
def content_blocks(draw: st.DrawFn) -> list[Any]:
    odd = st.sampled_from(["text", {"type": 1}, {"kind": "text"}, None])  # not blocks of a type
    block = st.sampled_from(BLOCK_TYPES).map(lambda t: {"type": t, "text": "x"})
    return draw(st.lists(block | odd, max_size=3))


@st.composite
def messages(draw: st.DrawFn, agent_id: str, start: int, count: int) -> list[Message]:
    history = []
    for index in range(start, start + count):
        # a unique text per message: two identical messages would share their first-save time
        blocks = [{"type": "text", "text": f"{agent_id}#{index}"}, *draw(content_blocks())]
        metadata = draw(st.none() | st.just({"turn": index}))
        history.append(Message(draw(st.sampled_from(ROLES)), blocks, metadata))
    return history


@st.composite
def metadata(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    data = draw(st.dictionaries(st.sampled_from(META_KEYS), st.sampled_from(META_VALUES), max_size=3))
    user = st.sampled_from([*USERS, 1, True])
    for key in draw(st.lists(st.sampled_from(["userId", "user"]), unique=True)):
        data[key] = draw(user)
    return data


@st.composite
def tool_records(draw: st.DrawFn) -> list[ToolCallRecord]:
    records = []
    for call_id in draw(st.lists(st.sampled_from(TOOL_IDS), unique=True, max_size=4)):
        records.append(
            ToolCallRecord(
                id=call_id,
                name=draw(st.sampled_from(TOOL_NAMES)),
                input={"n": 1},
                state=draw(st.sampled_from(list(ToolCallState))).value,
                approval=draw(
                    st.sampled_from([{"required": True}, {"required": False}, {}, {"required": 1}])
                ),
                is_error=draw(st.sampled_from([True, False, None])),
                created_at=draw(st.sampled_from(TOOL_TIMES)),
                updated_at=9,
            )
        )
    return records


@st.composite
def agent_spec(draw: st.DrawFn, agent_id: str) -> AgentSpec:
    times = st.sampled_from(SAVE_TIMES)
    first = draw(messages(agent_id, 0, draw(st.integers(0, 4))))
    saves = [(draw(times), first)] if first or draw(st.booleans()) else []
    if first and draw(st.booleans()):  # a later turn: keep a prefix (or all), add new messages
        kept = first[: draw(st.integers(0, len(first)))]
        saves.append((draw(times), kept + draw(messages(agent_id, len(first), draw(st.integers(0, 3))))))
    records = draw(tool_records())
    return AgentSpec(
        agent_id=agent_id,
        template_id=draw(st.sampled_from(TEMPLATES)),
        created_ms=draw(st.sampled_from(CREATED_TIMES)),
        metadata=draw(metadata()),
        info_time=draw(times),
        saves=saves,
        records=records,
        records_time=draw(times) if records or draw(st.booleans()) else None,
        snapshot_times=draw(st.lists(times, max_size=2)),
    )


@st.composite
def worlds(draw: st.DrawFn) -> list[AgentSpec]:
    ids = draw(st.lists(st.sampled_from(AGENT_IDS), unique=True, max_size=6))
    return [draw(agent_spec(agent_id)) for agent_id in ids]


# ---- loading it, and what the oracle expects ------------------------------------------------------


class Clock:
    """Stands in for ``kodestore.facade.now_ms``: every save happens at ``now``."""

    now = 0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(kodestore.facade, "now_ms", fake)
    return fake


@dataclass
class Oracle:
    sessions: list[SessionInfo] = field(default_factory=list)
    created_ms: dict[str, int] = field(default_factory=dict)
    messages: list[MessageRecord] = field(default_factory=list)
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    snapshots: Counter[str] = field(default_factory=Counter)


def _key(message: Message) -> bytes:
    return orjson.dumps(message.to_dict())


async def _save_history(store: Any, clock: Clock, spec: AgentSpec, oracle: Oracle) -> int:
    """Save each turn; a message keeps the time it was first saved. Returns the stored count."""
    first_saved: dict[bytes, int] = {}
    history: list[Message] = []
    for time, history in spec.saves:
        clock.now = time
        await store.save_messages(spec.agent_id, history)
        first_saved = {_key(m): first_saved.get(_key(m), time) for m in history}
    for seq, message in enumerate(history):
        oracle.messages.append(
            MessageRecord(
                spec.agent_id,
                seq,
                message.role,
                message.content,
                message.metadata,
                first_saved[_key(message)],
            )
        )
    return len(history)


async def populate(store: Any, clock: Clock, world: list[AgentSpec]) -> Oracle:
    oracle = Oracle()
    for spec in world:
        info = AgentInfo(spec.agent_id, spec.template_id, ms_to_iso(spec.created_ms), metadata=spec.metadata)
        clock.now = updated = spec.info_time
        await store.save_info(spec.agent_id, info)
        if spec.saves:
            updated = spec.saves[-1][0]
        count = await _save_history(store, clock, spec, oracle)
        if spec.records_time is not None:
            clock.now = updated = spec.records_time
            await store.save_tool_call_records(spec.agent_id, spec.records)
            for record in spec.records:
                oracle.tool_calls.append(
                    ToolCallRecord.from_dict({**record.to_dict(), "agentId": spec.agent_id})
                )
        for index, time in enumerate(spec.snapshot_times):
            clock.now = updated = time
            await store.save_snapshot(spec.agent_id, Snapshot(f"s{index}", [], -1, Bookmark(0, 0), "x"))
            oracle.snapshots[spec.agent_id] += 1
        oracle.created_ms[spec.agent_id] = spec.created_ms
        oracle.sessions.append(
            SessionInfo(
                spec.agent_id, spec.template_id, info.created_at, count, -1, None, spec.metadata, updated
            )
        )
    return oracle


async def reset(store: Any) -> None:
    """Empty the store between examples; the next example re-uses ids with older timestamps, which a
    deletion's tombstone would refuse as late writes, so the tombstones go too."""
    for agent_id in await store.list():
        await store.delete(agent_id)
        await store.clear_tombstone(agent_id)


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonb has it: 1 == 1.0, True is not 1, objects in any key order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _instant(bound: datetime | int) -> datetime:
    if isinstance(bound, int):
        return EPOCH + timedelta(milliseconds=bound)
    return bound if bound.tzinfo else bound.replace(tzinfo=UTC)


def in_window(ms: int, filters: dict[str, Any]) -> bool:
    moment = EPOCH + timedelta(milliseconds=ms)
    after, before = filters.get("created_after"), filters.get("created_before")
    return (after is None or moment >= _instant(after)) and (before is None or moment < _instant(before))


def page(rows: list[Any], filters: dict[str, Any]) -> list[Any]:
    offset = filters.get("offset", 0)
    return rows[offset : offset + filters.get("limit", 100)]


def _session_matches(oracle: Oracle, s: SessionInfo, f: dict[str, Any]) -> bool:
    meta = s.metadata if isinstance(s.metadata, dict) else {}
    user = f.get("user_id")
    wanted = f.get("metadata") or {}
    return (
        f.get("agent_id", s.agent_id) == s.agent_id
        and f.get("template_id", s.template_id) == s.template_id
        and (user is None or user in (meta.get("userId"), meta.get("user")))
        and all(k in meta and json_equal(meta[k], v) for k, v in wanted.items())
        and in_window(oracle.created_ms[s.agent_id], f)
    )


def expect_sessions(oracle: Oracle, f: dict[str, Any]) -> list[SessionInfo]:
    column: Callable[[SessionInfo], int] = {
        "created_at": lambda s: oracle.created_ms[s.agent_id],
        "updated_at": lambda s: s.updated_at,
        "message_count": lambda s: s.message_count,
    }[f.get("sort_by", "created_at")]
    rows = [s for s in oracle.sessions if _session_matches(oracle, s, f)]
    rows.sort(key=lambda s: (column(s), s.agent_id), reverse=f.get("sort_order", "desc") == "desc")
    return page(rows, f)


def expect_messages(oracle: Oracle, f: dict[str, Any]) -> list[MessageRecord]:
    kind = f.get("content_type")
    rows = [
        m
        for m in oracle.messages
        if f.get("agent_id", m.agent_id) == m.agent_id
        and f.get("role", m.role) == m.role
        and (kind is None or any(isinstance(b, dict) and b.get("type") == kind for b in m.content))
        and in_window(m.created_at, f)
    ]
    rows.sort(key=lambda m: (m.created_at, m.agent_id, m.seq), reverse=True)
    return page(rows, f)


def expect_tool_calls(oracle: Oracle, f: dict[str, Any]) -> list[ToolCallRecord]:
    rows = [
        r
        for r in oracle.tool_calls
        if f.get("agent_id", r.agent_id) == r.agent_id
        and f.get("tool_name", r.name) == r.name
        and f.get("state", r.state) == r.state
        and f.get("is_error", bool(r.is_error)) == bool(r.is_error)
        and f.get("has_approval", r.approval.get("required") is True) == (r.approval.get("required") is True)
        and in_window(r.created_at, f)
    ]
    rows.sort(key=lambda r: (r.created_at, r.agent_id or "", r.id), reverse=True)
    return page(rows, f)


def expect_stats(oracle: Oracle, agent_id: str | None) -> dict[str, Any]:
    def mine(agent: str | None) -> bool:
        return agent_id is None or agent == agent_id

    sessions = sum(mine(s.agent_id) for s in oracle.sessions)
    messages = sum(mine(m.agent_id) for m in oracle.messages)
    calls = [r for r in oracle.tool_calls if mine(r.agent_id)]
    return {
        "totalSessions": sessions,
        "totalMessages": messages,
        "totalToolCalls": len(calls),
        "totalSnapshots": sum(n for agent, n in oracle.snapshots.items() if mine(agent)),
        "avgMessagesPerSession": messages / sessions if sessions else 0.0,
        "toolCallsByName": dict(Counter(r.name for r in calls)),
        "toolCallsByState": dict(Counter(r.state for r in calls)),
    }


# ---- filters -------------------------------------------------------------------------------------


@st.composite
def timestamps(draw: st.DrawFn, instants: list[int]) -> datetime | int:
    """Epoch ms, or a datetime: naive (UTC), in another zone, or between two milliseconds."""
    ms = draw(st.integers(min(instants) - 1, max(instants) + 1))
    moment = EPOCH + timedelta(milliseconds=ms)
    return draw(
        st.sampled_from(
            [
                ms,
                moment.replace(tzinfo=None),
                moment.astimezone(timezone(timedelta(hours=5, minutes=30))),
                moment - timedelta(microseconds=500),
            ]
        )
    )


PAGING = {"limit": st.integers(0, 9), "offset": st.integers(0, 9)}
SESSION_FILTERS = {
    "agent_id": st.sampled_from(AGENT_IDS),
    "template_id": st.sampled_from(TEMPLATES),
    "user_id": st.sampled_from([*USERS, "1", "True"]),
    "metadata": st.dictionaries(
        st.sampled_from([*META_KEYS, "userId"]), st.sampled_from(META_VALUES), max_size=2
    ),
    "created_after": timestamps(CREATED_TIMES),
    "created_before": timestamps(CREATED_TIMES),
    "sort_by": st.sampled_from(["created_at", "updated_at", "message_count"]),
    "sort_order": st.sampled_from(["desc", "asc"]),
}
MESSAGE_FILTERS = {
    "agent_id": st.sampled_from(AGENT_IDS),
    "role": st.sampled_from(ROLES),
    "content_type": st.sampled_from(BLOCK_TYPES),
    "created_after": timestamps(SAVE_TIMES),
    "created_before": timestamps(SAVE_TIMES),
}
TOOL_CALL_FILTERS = {
    "agent_id": st.sampled_from(AGENT_IDS),
    "tool_name": st.sampled_from(TOOL_NAMES),
    "state": st.sampled_from([*ToolCallState, *(s.value for s in ToolCallState)]),
    "is_error": st.booleans(),
    "has_approval": st.booleans(),
    "created_after": timestamps(TOOL_TIMES),
    "created_before": timestamps(TOOL_TIMES),
}


def filters(options: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=options)  # type: ignore[arg-type]


def equivalent(value: Any) -> st.SearchStrategy[Any]:
    """The same JSON value written another way: 1 as 1.0, an object's keys in another order."""
    if isinstance(value, dict):
        items = [st.tuples(st.just(k), equivalent(v)) for k, v in reversed(value.items())]
        return st.tuples(*items).map(dict) | st.just(value)
    if isinstance(value, list):
        return st.tuples(*map(equivalent, value)).map(list)
    if isinstance(value, int) and not isinstance(value, bool):
        return st.sampled_from([value, float(value)])
    return st.just(value)


def stored_metadata(world: list[AgentSpec]) -> st.SearchStrategy[dict[str, Any]]:
    """Part of some agent's metadata, maybe rewritten equivalently: filters that do match something."""
    stored = [spec.metadata for spec in world if spec.metadata]
    if not stored:
        return st.just({})
    return st.sampled_from(stored).flatmap(_part_of)


def _part_of(meta: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.lists(st.sampled_from(sorted(meta)), unique=True, min_size=1, max_size=2)
    return keys.flatmap(lambda chosen: st.fixed_dictionaries({k: equivalent(meta[k]) for k in chosen}))


# ---- the properties ------------------------------------------------------------------------------


@RUNS
@given(world=worlds(), data=st.data())
async def test_every_query_and_stat_matches_the_oracle(
    store: Any, clock: Clock, world: list[AgentSpec], data: st.DataObject
) -> None:
    """Random combinations of filters, then each filter alone (combinations mostly match nothing)."""
    await reset(store)
    oracle = await populate(store, clock, world)
    session_options = {**SESSION_FILTERS, "metadata": SESSION_FILTERS["metadata"] | stored_metadata(world)}
    queries: list[tuple[Callable[..., Any], dict[str, Any], Callable[..., Any]]] = [
        (store.query_sessions, session_options, expect_sessions),
        (store.query_messages, MESSAGE_FILTERS, expect_messages),
        (store.query_tool_calls, TOOL_CALL_FILTERS, expect_tool_calls),
    ]
    for query, options, expect in queries:
        combined = data.draw(st.lists(filters({**options, **PAGING}), min_size=1, max_size=4))
        alone = [{name: data.draw(strategy, label=name)} for name, strategy in options.items()]
        for f in combined + alone:
            assert await query(**f) == expect(oracle, f), f
    for agent_id in [None, *(spec.agent_id for spec in world), "nobody"]:
        stats = (await store.aggregate_stats(agent_id)).to_dict()
        assert {k: stats[k] for k in expect_stats(oracle, None)} == expect_stats(oracle, agent_id), agent_id


async def walk_offset(query: Callable[..., Any], f: dict[str, Any], size: int, cap: int) -> list[Any]:
    """Every page by offset; stops past ``cap`` rows, so a query that repeats rows cannot loop."""
    rows: list[Any] = []
    while len(rows) <= cap and (more := await query(**f, limit=size, offset=len(rows))):
        rows.extend(more)
    return rows


async def walk_keyset(query: Callable[..., Any], f: dict[str, Any], size: int, cap: int) -> list[Any]:
    """Every page after the last row, passed alternately as the row itself and as its cursor."""
    rows = await query(**f, limit=size)
    while rows and len(rows) <= cap:
        last = rows[-1] if len(rows) // size % 2 else cursor_of(rows[-1])
        more = await query(**f, limit=size, after=last)
        if not more:
            break
        rows.extend(more)
    return rows


@RUNS
@given(
    world=worlds(),
    session_filter=filters(SESSION_FILTERS),
    message_filter=filters(MESSAGE_FILTERS),
    tool_call_filter=filters(TOOL_CALL_FILTERS),
    size=st.integers(1, 4),
)
async def test_walking_every_page_returns_each_row_once_in_order(
    store: Any,
    clock: Clock,
    world: list[AgentSpec],
    session_filter: dict[str, Any],
    message_filter: dict[str, Any],
    tool_call_filter: dict[str, Any],
    size: int,
) -> None:
    await reset(store)
    oracle = await populate(store, clock, world)
    walks = [
        (store.query_sessions, session_filter, expect_sessions),
        (store.query_messages, message_filter, expect_messages),
        (store.query_tool_calls, tool_call_filter, expect_tool_calls),
    ]
    for query, f, expect in walks:
        everything = expect(oracle, {**f, "limit": 10**6})
        assert await walk_offset(query, f, size, len(everything)) == everything, f
        assert await walk_keyset(query, f, size, len(everything)) == everything, f
