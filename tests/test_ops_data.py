"""Data builders and store dumps shared by the ops tests, and the tests of the agent record itself.

``fill_agent`` writes every kind of data an agent has (awkward text included); ``dump_store`` reads
everything back as plain JSON, events and database timestamps included, so two stores compare with
``==`` (``timestamps=False`` leaves the timestamps out, for a ``JSONStore``, which keeps none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_test_schema, make_store

from kodestore import Bookmark, Timeline
from kodestore.facade import Store
from kodestore.models import CompressionRecord, HistoryWindow, MediaCacheRecord, RecoveredFile, TodoSnapshot
from kodestore.ops.migrate import AgentState, read_agents
from kodestore.testing import sample_info, sample_message, sample_snapshot, sample_tool_call

AWKWARD = 'nul \x00 newline \n emoji 😀 \u2028 中 quote " backslash \\'
PAIRS = [("sqlite", "sqlite"), ("sqlite", "postgres"), ("postgres", "sqlite"), ("memory", "sqlite")]


async def fill_agent(
    store: Store, agent_id: str, *, template: str = "tpl-a", messages: int = 4, events: int = 9
) -> None:
    """One agent with info, messages, tool calls, a snapshot, todos, history, media and events."""
    info = sample_info(agent_id, template, breakpoint="READY")
    info.metadata = {"userId": "u1", AWKWARD: AWKWARD}
    await store.save_info(agent_id, info)
    history = [sample_message(i, text=f"{AWKWARD} {agent_id} {i}") for i in range(messages)]
    await store.save_messages(agent_id, history)
    await store.save_tool_call_records(agent_id, [sample_tool_call(i) for i in range(messages // 2)])
    await store.save_snapshot(agent_id, sample_snapshot("sfp-1", history[:2]))
    await store.save_todos(agent_id, TodoSnapshot([{"id": "t1", "title": AWKWARD}], 2, 1_700_000_000_000))
    await store.save_history_window(agent_id, HistoryWindow("w1", history[:1], [], {"tokens": 3}, 1))
    await store.save_compression_record(
        agent_id, CompressionRecord("c1", "w1", {"ratio": 0.5}, AWKWARD, 0.5, ["a.txt"], 2)
    )
    await store.save_recovered_file(agent_id, RecoveredFile("a.txt", AWKWARD, 10, 3))
    await store.save_media_cache(agent_id, [MediaCacheRecord("k1", "anthropic", "image/png", 12)])
    channels = ("progress", "control", "monitor")
    for seq in range(1, events + 1):
        event = {"channel": channels[seq % 3], "type": "text_chunk", "delta": f"{AWKWARD}{seq}"}
        await store.append_event(agent_id, Timeline(seq, Bookmark(seq, 1_700_000_000_000 + seq), event))
    info.message_count = messages
    info.last_bookmark = Bookmark(events, 1_700_000_000_000 + events) if events else None
    await store.save_info(agent_id, info)


async def read_agent(store: Store, agent_id: str) -> AgentState | None:
    [(_, state)] = [item async for item in read_agents(store, [agent_id])]
    return state


async def dump_agent(store: Store, agent_id: str, *, timestamps: bool = True) -> dict[str, Any]:
    state = await read_agent(store, agent_id)
    assert state is not None, agent_id
    dumped = {**state.to_json(), "events": [t.to_dict() async for t in store.read_events(agent_id)]}
    if not timestamps:
        del dumped["messageCreatedAtMs"], dumped["updatedAtMs"]
    return dumped


async def dump_store(store: Store, *, timestamps: bool = True) -> dict[str, dict[str, Any]]:
    return {
        agent_id: await dump_agent(store, agent_id, timestamps=timestamps) for agent_id in await store.list()
    }


class Stores:
    """Opens stores of any backend under one tmp dir and closes (and drops) them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[Any] = []

    async def new(self, backend: str, name: str) -> Any:
        store = await make_store(backend, self.tmp_path / name)
        self.opened.append(store)
        return store

    async def __aenter__(self) -> Stores:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for store in self.opened:
            await store.close()
            await drop_test_schema(store)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


# ---- the agent record --------------------------------------------------------------------------


async def test_agent_state_json_round_trip(stores: Stores) -> None:
    store = await stores.new("memory", "m")
    await fill_agent(store, "a1")
    state = await read_agent(store, "a1")
    assert state is not None
    assert AgentState.from_json(state.to_json()) == state


def test_agent_state_rejects_a_mismatched_id() -> None:
    data = AgentState(sample_info("a1")).to_json()
    data["agentId"] = "other"
    with pytest.raises(ValueError, match="differs"):
        AgentState.from_json(data)


async def test_read_agent_of_unknown_agent_is_none(stores: Stores) -> None:
    store = await stores.new("memory", "m")
    assert await read_agent(store, "nobody") is None


async def test_read_agents_keeps_the_order_and_marks_missing_agents(stores: Stores) -> None:
    store = await stores.new("memory", "m")
    for agent_id in ("b", "a", "c"):
        await fill_agent(store, agent_id, events=0)
    found = [
        (agent_id, state and state.agent_id) async for agent_id, state in read_agents(store, ["c", "x", "a"])
    ]
    assert found == [("c", "c"), ("x", None), ("a", "a")]


def test_agent_state_rejects_timestamps_that_do_not_fit() -> None:
    data = AgentState(sample_info("a1"), [sample_message(0)]).to_json()
    data["messageCreatedAtMs"] = [1, 2]
    with pytest.raises(ValueError, match="2 times for 1 messages"):
        AgentState.from_json(data)
    data["messageCreatedAtMs"], data["updatedAtMs"] = [1], "yesterday"
    with pytest.raises(ValueError, match="updated_at_ms"):
        AgentState.from_json(data)
