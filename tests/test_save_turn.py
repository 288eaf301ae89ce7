"""``save_turn`` with ``messages_from`` / ``tool_call_records_from``: a turn saves only the part of the
lists it changed, and what loads back is the whole history, whatever order full-list saves, slice
saves, retries and other store objects on the same database come in. Refused calls write nothing.
On SQLite, inline writes must leave the event loop to other tasks."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_test_schema, make_store
from helpers.pg_env import make_test_postgres_store

from kodestore import SqliteStore
from kodestore.models import AgentInfo, Message, ToolCallRecord
from kodestore.testing import sample_info, sample_message, sample_timeline, sample_tool_call

AGENT = "a1"
State = tuple[list[Message], list[ToolCallRecord], AgentInfo | None, list[int]]


def _info(message_count: int = 0, step: int = 0) -> AgentInfo:
    info = sample_info(AGENT)
    info.message_count = message_count
    info.metadata = {**(info.metadata or {}), "step": step}
    return info


def _history(count: int) -> list[Message]:
    return [sample_message(i) for i in range(count)]


def _records(count: int) -> list[ToolCallRecord]:
    return [sample_tool_call(i) for i in range(count)]


async def _state(store: Any) -> State:
    """Everything a save_turn can write, as a reader sees it: messages, records, info, event seqs."""
    events = [t.bookmark.seq async for t in store.read_events(AGENT)]
    return (
        await store.load_messages(AGENT),
        await store.load_tool_call_records(AGENT),
        await store.load_info(AGENT),
        events,
    )


async def _lists(store: Any) -> tuple[list[Message], list[ToolCallRecord], int]:
    info = await store.load_info(AGENT)
    return await store.load_messages(AGENT), await store.load_tool_call_records(AGENT), info.message_count


# ---- every backend -------------------------------------------------------------------------------


async def test_turns_saved_as_slices_load_as_the_whole_history(any_store: Any) -> None:
    history: list[Message] = []
    records: list[ToolCallRecord] = []
    for turn in range(5):
        m_from, r_from = len(history), len(records)
        history += [sample_message(2 * turn), sample_message(2 * turn + 1)]
        records.append(sample_tool_call(turn))
        await any_store.save_turn(
            AGENT,
            info=_info(step=turn),
            messages=history[m_from:],
            messages_from=m_from,
            tool_call_records=records[r_from:],
            tool_call_records_from=r_from,
            events=[sample_timeline(turn + 1)],
        )
    assert await _state(any_store) == (history, records, _info(10, step=4), [1, 2, 3, 4, 5])


async def test_a_retried_turn_changes_nothing(any_store: Any) -> None:
    history, records = _history(6), _records(3)
    await any_store.save_turn(AGENT, info=_info(), messages=history[:4], tool_call_records=records[:2])
    for _ in range(2):
        await any_store.save_turn(
            AGENT,
            info=_info(step=1),
            messages=history[4:],
            messages_from=4,
            tool_call_records=records[2:],
            tool_call_records_from=2,
        )
        assert await _state(any_store) == (history, records, _info(6, step=1), [])


async def test_a_message_slice_inside_the_history_replaces_from_there_and_truncates(any_store: Any) -> None:
    await any_store.save_turn(AGENT, info=_info(), messages=_history(6))
    rewritten = [sample_message(3, text="rewritten 3"), sample_message(4, text="rewritten 4")]
    await any_store.save_turn(AGENT, messages=rewritten, messages_from=3)
    assert await any_store.load_messages(AGENT) == _history(3) + rewritten
    assert (await any_store.load_info(AGENT)).message_count == 5


async def test_a_record_slice_inside_the_list_replaces_from_there_and_drops_the_rest(any_store: Any) -> None:
    await any_store.save_turn(AGENT, info=_info(), tool_call_records=_records(5))
    # call-4 moves to position 2, call-2 changes and moves to 3, call-3 is in no slice: gone
    replacement = [sample_tool_call(4), sample_tool_call(2, "FAILED"), sample_tool_call(9)]
    await any_store.save_turn(AGENT, tool_call_records=replacement, tool_call_records_from=2)
    assert await any_store.load_tool_call_records(AGENT) == _records(2) + replacement


@pytest.mark.parametrize("past_the_end", ["messages", "records"])
async def test_a_slice_past_the_stored_end_writes_nothing(any_store: Any, past_the_end: str) -> None:
    await any_store.save_turn(
        AGENT, info=_info(), messages=_history(2), tool_call_records=_records(1), events=[sample_timeline(1)]
    )
    before = await _state(any_store)
    m_from, r_from = (3, 1) if past_the_end == "messages" else (2, 2)  # the other one is valid
    with pytest.raises(ValueError, match="stored"):
        await any_store.save_turn(
            AGENT,
            info=_info(step=1),
            messages=[sample_message(m_from)],
            messages_from=m_from,
            tool_call_records=[sample_tool_call(5)],
            tool_call_records_from=r_from,
            events=[sample_timeline(2)],
        )
    assert await _state(any_store) == before


async def test_a_record_id_stored_before_the_slice_writes_nothing(any_store: Any) -> None:
    await any_store.save_turn(
        AGENT, info=_info(), messages=_history(2), tool_call_records=_records(3), events=[sample_timeline(1)]
    )
    before = await _state(any_store)
    with pytest.raises(ValueError, match="call-0"):
        await any_store.save_turn(
            AGENT,
            info=_info(step=1),
            messages=[sample_message(2)],
            messages_from=2,
            tool_call_records=[sample_tool_call(5), sample_tool_call(0)],
            tool_call_records_from=2,
            events=[sample_timeline(2)],
        )
    assert await _state(any_store) == before


@pytest.mark.parametrize(
    "arguments",
    [
        {"messages": [sample_message(0)], "messages_from": -1},
        {"messages": [sample_message(0)], "messages_from": True},
        {"messages": [sample_message(0)], "messages_from": 1.0},
        {"messages_from": 2},
        {"tool_call_records": [sample_tool_call(0)], "tool_call_records_from": -1},
        {"tool_call_records": [sample_tool_call(0)], "tool_call_records_from": True},
        {"tool_call_records_from": 1},
    ],
    ids=["messages-negative", "messages-bool", "messages-float", "messages-missing", "records-negative",
         "records-bool", "records-missing"],
)  # fmt: skip
async def test_bad_starts_are_refused_before_writing(any_store: Any, arguments: dict[str, Any]) -> None:
    await any_store.save_turn(AGENT, info=_info(), messages=_history(2), tool_call_records=_records(1))
    before = await _state(any_store)
    with pytest.raises(ValueError, match="_from"):
        await any_store.save_turn(AGENT, info=_info(step=1), events=[sample_timeline(1)], **arguments)
    assert await _state(any_store) == before


async def test_full_saves_and_slice_saves_mix(any_store: Any) -> None:
    history, records = _history(10), _records(5)
    await any_store.save_info(AGENT, _info())

    async def save(m_from: int, m_end: int, r_from: int, r_end: int) -> None:
        await any_store.save_turn(
            AGENT,
            messages=history[m_from:m_end],
            messages_from=m_from,
            tool_call_records=records[r_from:r_end],
            tool_call_records_from=r_from,
        )
        assert await _lists(any_store) == (history[:m_end], records[:r_end], m_end)

    await save(0, 2, 0, 1)  # full
    await save(2, 4, 1, 2)  # slice
    await save(0, 6, 0, 3)  # full, longer
    await save(6, 8, 3, 4)  # slice
    await save(0, 8, 0, 4)  # full, unchanged
    history[3] = sample_message(3, text="edited")
    records[1] = sample_tool_call(1, "FAILED")
    await save(0, 8, 0, 4)  # full, edited in the middle
    await save(8, 10, 4, 5)  # slice
    await save(0, 5, 0, 2)  # full, shorter
    await save(5, 7, 2, 3)  # slice after the truncation
    await any_store.save_messages(AGENT, history[:9])
    await any_store.save_tool_call_records(AGENT, records[:4])
    assert await _lists(any_store) == (history[:9], records[:4], 9)
    await save(9, 10, 4, 5)  # slice after the separate full-list saves


async def test_kept_messages_keep_their_created_at(store: Any) -> None:
    history = _history(8)

    async def created_at() -> dict[int, int]:
        return {m.seq: m.created_at for m in await store.query_messages(agent_id=AGENT)}

    await store.save_turn(AGENT, info=_info(), messages=history[:2])
    seen = await created_at()
    for m_from in (2, 4, 6):
        await asyncio.sleep(0.002)
        await store.save_turn(AGENT, messages=history[m_from : m_from + 2], messages_from=m_from)
        now = await created_at()
        assert {seq: now[seq] for seq in seen} == seen
        assert min(now[m_from], now[m_from + 1]) > max(seen.values())
        seen = now
    await asyncio.sleep(0.002)
    await store.save_turn(AGENT, messages=history[6:], messages_from=6)  # a retry
    await store.save_turn(AGENT, messages=history)  # the same history as a full list
    assert await created_at() == seen


# ---- several store objects on one database -------------------------------------------------------

OpenStore = Callable[[], Awaitable[Any]]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens store objects on one database (and one files directory): each has its own caches."""
    opened: list[Any] = []

    async def open_one() -> Any:
        if not opened:
            store = await make_store(request.param, tmp_path)
        elif request.param == "sqlite":
            store = await SqliteStore(opened[0].db_path, opened[0].file_store_base_dir).open()
        else:
            store = await make_test_postgres_store(tmp_path, schema=opened[0].schema)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
    if opened:
        await drop_test_schema(opened[0])


async def test_saves_of_every_size_and_shape_load_back_whole(open_store: OpenStore) -> None:
    """A turn's save is one statement on Postgres; saves that do not fit one (tens of thousands of
    parameters) or that delete records by id take the pipeline: each loads back what it saved."""
    store = await open_store()
    await store.save_info(AGENT, _info())
    history, records = _history(20), _records(10)
    await store.save_turn(AGENT, messages=history, tool_call_records=records)  # diffed on the server
    history.append(sample_message(20))
    await store.save_turn(AGENT, messages=history, tool_call_records=records)  # one small statement
    assert await _lists(store) == (history, records, 21)
    huge = [sample_message(i, text=f"rewritten {i}") for i in range(4_500)]  # 36,000 parameters
    await store.save_messages(AGENT, huge)
    assert await _lists(store) == (huge, records, 4_500)
    kept = records[::2]  # the others are deleted by id
    await store.save_tool_call_records(AGENT, kept)
    assert await _lists(store) == (huge, kept, 4_500)
    assert await _lists(await open_store()) == (huge, kept, 4_500)


@pytest.mark.parametrize("next_save", ["slice", "full"])
async def test_a_stale_store_saves_exactly_what_it_was_given(open_store: OpenStore, next_save: str) -> None:
    a, b = await open_store(), await open_store()
    history, records = _history(6), _records(3)
    for turn in range(3):
        await a.save_turn(
            AGENT,
            info=_info(step=turn),
            messages=history[2 * turn : 2 * turn + 2],
            messages_from=2 * turn,
            tool_call_records=records[turn : turn + 1],
            tool_call_records_from=turn,
        )
    theirs = [sample_message(i, text=f"other {i}") for i in range(8)]
    their_records = [sample_tool_call(i, "FAILED") for i in range(10, 14)]
    await b.save_turn(AGENT, info=_info(step=9), messages=theirs, tool_call_records=their_records)
    history += [sample_message(6), sample_message(7)]
    records.append(sample_tool_call(3))
    if next_save == "slice":
        await a.save_turn(
            AGENT,
            messages=history[6:],
            messages_from=6,
            tool_call_records=records[3:],
            tool_call_records_from=3,
        )
        expected = (theirs[:6] + history[6:], their_records[:3] + records[3:], 8)
    else:
        await a.save_turn(AGENT, messages=history, tool_call_records=records)
        expected = (history, records, 8)
    for reader in (a, b, await open_store()):
        assert await _lists(reader) == expected


@pytest.mark.parametrize("truncated", ["messages", "records"])
async def test_a_stale_slice_past_what_another_store_left_changes_no_record(
    open_store: OpenStore, truncated: str
) -> None:
    """The writer's cache cannot see the truncation, so only the transaction refuses the slice: after
    the events were appended (documented: unlocked writers of one agent race)."""
    a, b = await open_store(), await open_store()
    await a.save_turn(
        AGENT, info=_info(), messages=_history(6), tool_call_records=_records(3), events=[sample_timeline(1)]
    )
    if truncated == "messages":
        await b.save_messages(AGENT, _history(2))
    else:
        await b.save_tool_call_records(AGENT, _records(1))
    before = await _state(await open_store())
    with pytest.raises(ValueError, match="stored"):
        await a.save_turn(
            AGENT,
            info=_info(step=1),
            messages=[sample_message(6)],
            messages_from=6 if truncated == "messages" else 2,
            tool_call_records=[sample_tool_call(3)],
            tool_call_records_from=3 if truncated == "records" else 1,
            events=[sample_timeline(2)],
        )
    assert (await _state(await open_store()))[:3] == before[:3]


@pytest.mark.parametrize("writer", ["fresh", "stale"])
async def test_a_record_id_stored_before_the_slice_writes_nothing_whatever_the_cache(
    open_store: OpenStore, writer: str
) -> None:
    a = await open_store()
    await a.save_turn(AGENT, info=_info(), tool_call_records=_records(3), events=[sample_timeline(1)])
    if writer == "stale":  # another store puts call-7 first; a still believes call-0..call-2
        await (await open_store()).save_tool_call_records(AGENT, [sample_tool_call(7), *_records(2)])
        duplicate = sample_tool_call(7)
    else:  # a store that has cached nothing of the agent
        a = await open_store()
        duplicate = sample_tool_call(0)
    before = await _state(await open_store())
    with pytest.raises(ValueError, match=duplicate.id):
        await a.save_turn(
            AGENT,
            info=_info(step=1),
            tool_call_records=[duplicate],
            tool_call_records_from=3 if writer == "fresh" else 2,
            events=[sample_timeline(2)],
        )
    after = await _state(await open_store())
    # a stale cache lets the events through before the transaction refuses (see the test above)
    assert after == before if writer == "fresh" else after[:3] == before[:3]


async def test_interleaved_saves_of_two_stores_end_as_the_last_call(open_store: OpenStore) -> None:
    """Random valid calls from two stores; after each, a third store reads exactly what it asked for."""
    writers = [await open_store(), await open_store()]
    reader = await open_store()
    rng = random.Random(20261101)
    messages: list[Message] = []
    records: list[ToolCallRecord] = []
    count = 0
    await writers[0].save_info(AGENT, _info())

    def new_messages(start: int) -> list[Message]:  # few texts: repeats and moves happen
        return [sample_message(start + i, text=rng.choice("abc")) for i in range(rng.randint(0, 3))]

    def new_records(kept: list[ToolCallRecord]) -> list[ToolCallRecord]:
        free = [i for i in range(12) if f"call-{i}" not in {r.id for r in kept}]
        chosen = rng.sample(free, rng.randint(0, 3))
        return [sample_tool_call(i, rng.choice(["COMPLETED", "FAILED"])) for i in chosen]

    for step in range(40):
        writer = rng.choice(writers)
        kind = rng.choice(["turn", "turn", "messages", "records", "info"])
        m_from, r_from = rng.randint(0, len(messages)), rng.randint(0, len(records))
        if kind == "messages":
            messages = messages[:m_from] + new_messages(m_from)
            count = len(messages)
            await writer.save_messages(AGENT, messages)
        elif kind == "records":
            records = records[:r_from] + new_records(records[:r_from])
            await writer.save_tool_call_records(AGENT, records)
        elif kind == "info":
            count = rng.randint(0, 20)
            await writer.save_info(AGENT, _info(count, step))
        else:
            m_slice, r_slice = new_messages(m_from), new_records(records[:r_from])
            messages, records = messages[:m_from] + m_slice, records[:r_from] + r_slice
            count = len(messages)
            await writer.save_turn(
                AGENT,
                info=_info(step=step),
                messages=m_slice,
                messages_from=m_from,
                tool_call_records=r_slice,
                tool_call_records_from=r_from,
            )
        assert await _lists(reader) == (messages, records, count), f"step {step}: {kind}"


@pytest.mark.parametrize("metadata", [None, {"team": "a"}])
async def test_info_set_again_wins_over_another_stores_change(
    open_store: OpenStore, metadata: dict[str, Any] | None
) -> None:
    """A store saving the values it saved last checks them instead of writing them again (sparing
    their index entries); when another store changed them in between, the last call still wins."""
    a, b = await open_store(), await open_store()
    mine = sample_info(AGENT)
    mine.metadata, mine.template_id = metadata, "template-a"
    for _ in range(3):
        await a.save_info(AGENT, mine)
    theirs = sample_info(AGENT)
    theirs.metadata, theirs.template_id, theirs.message_count = {"team": "b"}, "template-b", 7
    await b.save_info(AGENT, theirs)
    await a.save_info(AGENT, mine)
    for reader in (a, b, await open_store()):
        assert await reader.load_info(AGENT) == mine
        (session,) = await reader.query_sessions(template_id="template-a")
        assert session.agent_id == AGENT
        assert await reader.query_sessions(template_id="template-b") == []


@pytest.mark.parametrize("other_writes", ["messages", "records", "info", "nothing"])
async def test_the_first_save_after_creating_an_agent_sees_another_stores_writes(
    open_store: OpenStore, other_writes: str
) -> None:
    """A store that created an agent knows it empty, so its next save is diffed against nothing; when
    another store wrote in between, the guard sees it and the save still ends as the call."""
    a, b = await open_store(), await open_store()
    await a.save_info(AGENT, _info())
    if other_writes == "messages":
        await b.save_messages(AGENT, [sample_message(i, text="theirs") for i in range(5)])
    elif other_writes == "records":
        await b.save_tool_call_records(AGENT, [sample_tool_call(i, "FAILED") for i in range(10, 13)])
    elif other_writes == "info":
        theirs = _info(step=9)
        theirs.template_id = "template-b"
        await b.save_info(AGENT, theirs)
    history, records = _history(2), _records(1)
    await a.save_turn(AGENT, messages=history, tool_call_records=records, info=_info(2))
    for reader in (a, b, await open_store()):
        assert await _lists(reader) == (history, records, 2)
        assert await reader.load_info(AGENT) == _info(2)


async def test_the_first_save_after_creating_an_agent_is_one_guarded_batch(tmp_path: Path) -> None:
    """Creating an agent tells the store it has no messages or tool calls: its first turn is written
    like any other (the guard, the inserts, COMMIT), with no reads of what is stored."""
    async with await make_store("sqlite", tmp_path) as store:
        await store.save_info(AGENT, _info())
        executed: list[str] = []
        store._records.driver._conn.set_trace_callback(executed.append)
        await store.save_turn(AGENT, messages=_history(2), tool_call_records=_records(1), info=_info(2))
        store._records.driver._conn.set_trace_callback(None)
    statements = [sql.split()[0].upper() for sql in executed]
    assert statements == ["BEGIN", "UPDATE", "INSERT", "INSERT", "INSERT", "COMMIT"], executed


# ---- SQLite writes inline, without blocking the loop ---------------------------------------------


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Any]:
    store = await make_store("sqlite", tmp_path)
    yield store
    await store.close()


async def test_a_tight_save_loop_leaves_the_loop_to_other_tasks(sqlite_store: Any) -> None:
    await sqlite_store.save_turn(AGENT, info=_info(), messages=[sample_message(0)])
    ticks = 0
    writing = True

    async def tick() -> None:
        nonlocal ticks
        while writing:
            await asyncio.sleep(0)
            ticks += 1

    ticker = asyncio.create_task(tick())
    for n in range(1, 201):
        await sqlite_store.save_turn(AGENT, messages=[sample_message(n)], messages_from=n)
    writing = False
    await ticker
    assert ticks >= 10
    assert await sqlite_store.load_messages(AGENT) == _history(201)


async def test_a_write_lock_held_elsewhere_does_not_block_the_loop(sqlite_store: Any) -> None:
    await sqlite_store.save_turn(AGENT, info=_info(), messages=[sample_message(0)])
    gaps: list[float] = []
    waiting = True

    async def tick() -> None:
        last = time.perf_counter()
        while waiting:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    holder = sqlite3.connect(sqlite_store.db_path, isolation_level=None, check_same_thread=False)
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    holder.execute("BEGIN IMMEDIATE")
    release.start()  # on its own thread: it commits even if the loop is blocked
    try:
        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0.02)  # the ticker runs
        started = time.perf_counter()
        await sqlite_store.save_turn(AGENT, messages=[sample_message(1)], messages_from=1)
        waited = time.perf_counter() - started
        waiting = False
        await ticker
    finally:
        release.join()
        holder.close()
    assert waited >= 0.2  # the save did wait for the other connection's lock
    assert len(gaps) >= 10 and max(gaps) < 0.2
    assert await sqlite_store.load_messages(AGENT) == _history(2)
