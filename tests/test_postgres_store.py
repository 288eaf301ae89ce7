"""PostgresStore against the real server: every method, NUL-safe text on every column, pool options.

The full contract suite runs through ``tests/test_contract.py``; these are the Postgres-specific checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.pg_env import drop_schema, new_schema, postgres_store, require_postgres
from helpers.pg_strategies import json_values, tricky_text
from hypothesis import HealthCheck, given, settings

from kodestore.config import PostgresOptions
from kodestore.db.base import Stmt
from kodestore.models import (
    AgentInfo,
    CompressionRecord,
    HistoryWindow,
    MediaCacheRecord,
    Message,
    RecoveredFile,
    Snapshot,
    TodoSnapshot,
    ToolCallRecord,
)
from kodestore.testing import sample_info, sample_message, sample_snapshot, sample_timeline, sample_tool_call

pytestmark = pytest.mark.postgres

# NUL, the stuffing character, JSON escapes of both written literally, escaped backslashes, non-ASCII
NASTY = "n\x00ul \x01\x01 \x01\x02 \\u0000 \\u0001\\u0002 \\\\u0000 \\ \ue000 é \U0001f600"


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[Any]:
    async with postgres_store(tmp_path) as store:
        yield store


async def _events(store: Any, agent_id: str, **kwargs: Any) -> list[int]:
    return [t.bookmark.seq async for t in store.read_events(agent_id, **kwargs)]


@pytest.mark.asyncio
async def test_every_store_method_round_trips(pg: Any) -> None:
    agent = "agent-1"
    info = sample_info(agent)
    await pg.save_info(agent, info)
    assert await pg.load_info(agent) == info
    assert await pg.exists(agent) and not await pg.exists("nobody")

    messages = [sample_message(i) for i in range(4)]
    await pg.save_messages(agent, messages)
    assert await pg.load_messages(agent) == messages
    assert (await pg.load_info(agent)).message_count == 4
    await pg.save_messages(agent, messages[:2])  # replace with a shorter history
    assert await pg.load_messages(agent) == messages[:2]

    records = [sample_tool_call(i) for i in range(3)]
    await pg.save_tool_call_records(agent, records)
    assert await pg.load_tool_call_records(agent) == records
    await pg.save_tool_call_records(agent, records[1:])
    assert await pg.load_tool_call_records(agent) == records[1:]

    todos = TodoSnapshot(todos=[{"id": "t1", "title": "write", "status": "pending"}], version=2, updated_at=5)
    await pg.save_todos(agent, todos)
    assert await pg.load_todos(agent) == todos

    for seq in range(1, 5):
        await pg.append_event(agent, sample_timeline(seq, ("progress", "control")[seq % 2]))
    assert await _events(pg, agent) == [1, 2, 3, 4]
    assert await _events(pg, agent, since={"seq": 2, "timestamp": 0}) == [3, 4]
    assert await _events(pg, agent, channel="control") == [1, 3]

    window = HistoryWindow(
        id="w1", messages=messages[:1], events=[sample_timeline(1)], stats={"n": 1}, timestamp=9
    )
    await pg.save_history_window(agent, window)
    assert await pg.load_history_windows(agent) == [window]
    compression = CompressionRecord(
        id="c1", window_id="w1", config={"k": 1}, summary="s", ratio=0.5, recovered_files=["a"], timestamp=9
    )
    await pg.save_compression_record(agent, compression)
    assert await pg.load_compression_records(agent) == [compression]
    recovered = RecoveredFile(path="a.txt", content="body", mtime=1, timestamp=2)
    await pg.save_recovered_file(agent, recovered)
    assert await pg.load_recovered_files(agent) == [recovered]
    media = [MediaCacheRecord(key="k", provider="p", mime_type="image/png", size_bytes=3, created_at=4)]
    await pg.save_media_cache(agent, media)
    assert await pg.load_media_cache(agent) == media

    first, second = sample_snapshot("s1", messages[:1]), sample_snapshot("s2", messages[:2])
    await pg.save_snapshot(agent, first)
    await pg.save_snapshot(agent, second)
    changed = sample_snapshot("s1", messages[:2])
    await pg.save_snapshot(agent, changed)  # upsert keeps the first insertion's place
    assert await pg.load_snapshot(agent, "s1") == changed
    assert await pg.load_snapshot(agent, "missing") is None
    assert [s.id for s in await pg.list_snapshots(agent)] == ["s1", "s2"]

    await pg.save_turn(agent, messages=messages, tool_call_records=records, events=[sample_timeline(5)])
    assert await pg.load_messages(agent) == messages
    assert await _events(pg, agent, since=4) == [5]

    await pg.save_info("agent-2", sample_info("agent-2"))
    assert await pg.list() == ["agent-1", "agent-2"]
    assert await pg.list("agent-2") == ["agent-2"]
    assert await pg.list("agent-%") == []  # no LIKE: '%' is literal

    child = await pg.fork(agent, up_to_message=2)
    assert await pg.load_messages(child) == messages[:2]
    copies = await pg.batch_fork(agent, 2)
    lineage = await pg.get_lineage(agent)
    assert lineage["ancestors"] == [] and set(lineage["descendants"]) == {child, *copies}
    assert (await pg.get_lineage(child))["ancestors"] == [agent]

    health = await pg.health_check()
    assert health.healthy and health.database.connected
    assert (await pg.check_consistency(agent)).consistent
    metrics = await pg.get_metrics()
    assert metrics.storage.total_agents == 5 and metrics.storage.db_size_bytes > 0
    async with pg.agent_lock(agent, timeout_ms=100):
        pass

    await pg.delete(agent)
    await pg.delete(agent)  # idempotent
    assert not await pg.exists(agent)
    assert await pg.load_messages(agent) == [] and await pg.load_snapshot(agent, "s1") is None
    assert await _events(pg, agent) == []


@pytest.mark.asyncio
async def test_queries_filter_page_and_aggregate(pg: Any) -> None:
    for n in range(3):
        agent = f"q-{n}"
        await pg.save_info(agent, sample_info(agent, template_id=f"tpl-{n % 2}"))
        await pg.save_messages(agent, [sample_message(i) for i in range(n + 1)])
        await pg.save_tool_call_records(
            agent, [sample_tool_call(i, ("COMPLETED", "FAILED")[i % 2]) for i in range(n)]
        )
    assert {s.agent_id for s in await pg.query_sessions(template_id="tpl-0")} == {"q-0", "q-2"}
    assert len(await pg.query_sessions(user_id="u1")) == 3
    assert [s.agent_id for s in await pg.query_sessions(sort_by="message_count", sort_order="asc")] == [
        "q-0",
        "q-1",
        "q-2",
    ]
    pages = [await pg.query_messages(limit=2, offset=offset) for offset in range(0, 6, 2)]
    assert sorted((m.agent_id, m.seq) for page in pages for m in page) == sorted(
        (f"q-{n}", i) for n in range(3) for i in range(n + 1)
    )
    assert {m.seq for m in await pg.query_messages(content_type="tool_use")} == {1}
    assert len(await pg.query_tool_calls(state="FAILED")) == 1
    assert len(await pg.query_tool_calls(is_error=True)) == 1
    assert len(await pg.query_tool_calls(has_approval=True)) == 2  # call-0 of q-1 and of q-2
    stats = await pg.aggregate_stats()
    assert (stats.total_messages, stats.total_tool_calls) == (6, 3)
    assert stats.tool_calls_by_state == {"COMPLETED": 2, "FAILED": 1}
    assert (await pg.aggregate_stats("q-0")).tool_calls_by_name == {}


def _nasty_agent(agent_id: str) -> tuple[AgentInfo, list[Message], list[ToolCallRecord], Snapshot]:
    info = sample_info(agent_id, template_id="tpl " + NASTY)
    info.metadata = {"userId": NASTY, "key " + NASTY: [NASTY, {NASTY: NASTY}]}
    info.breakpoint = NASTY
    info.config_version = NASTY
    info.extra = {"custom " + NASTY: NASTY}
    messages = [
        Message(
            role="us\x00er",
            content=[{"type": "te\x00xt", "text": NASTY, NASTY: {NASTY: NASTY}}],
            metadata={NASTY: NASTY},
            extra={"extra " + NASTY: NASTY},
        ),
        Message(role="assistant", content=[{"type": "text", "text": "plain"}]),
    ]
    record = ToolCallRecord(
        id="call " + NASTY,
        name="to\x00ol",
        input={"path": NASTY, NASTY: NASTY},
        state="COMPLETED",
        approval={"required": True, "note": NASTY},
        result={NASTY: [NASTY]},
        error=NASTY,
        is_error=False,
        created_at=1_700_000_000_000,
        audit_trail=[{"note": NASTY}],
        extra={"extra " + NASTY: NASTY},
    )
    snapshot = sample_snapshot("snap " + NASTY, messages)
    snapshot.metadata = {NASTY: NASTY}
    return info, messages, [record], snapshot


@pytest.mark.asyncio
async def test_nul_and_escape_characters_round_trip_on_every_column(pg: Any) -> None:
    agent = "agent-\ue000-é"  # ids cannot hold a control character or a backslash
    info, messages, records, snapshot = _nasty_agent(agent)
    await pg.save_info(agent, info)
    await pg.save_messages(agent, messages)
    await pg.save_tool_call_records(agent, records)
    await pg.save_snapshot(agent, snapshot)
    info.message_count = len(messages)

    assert await pg.load_info(agent) == info
    assert await pg.load_messages(agent) == messages
    assert await pg.load_tool_call_records(agent) == records
    assert await pg.load_snapshot(agent, snapshot.id) == snapshot
    assert await pg.list_snapshots(agent) == [snapshot]
    assert await pg.list("agent-\ue000") == [agent]

    (session,) = await pg.query_sessions(template_id=info.template_id, user_id=NASTY)
    assert (session.agent_id, session.template_id, session.metadata) == (
        agent,
        info.template_id,
        info.metadata,
    )
    (message,) = await pg.query_messages(role="us\x00er", content_type="te\x00xt")
    assert (message.agent_id, message.content, message.metadata) == (
        agent,
        messages[0].content,
        messages[0].metadata,
    )
    (found,) = await pg.query_tool_calls(tool_name="to\x00ol", has_approval=True)
    assert found.agent_id == agent
    found.agent_id = None
    assert found == records[0]
    stats = await pg.aggregate_stats(agent)
    assert stats.tool_calls_by_name == {"to\x00ol": 1} and stats.tool_calls_by_state == {"COMPLETED": 1}

    # near misses: NUL, its stored form and a literal backslash-u0000 stay three different strings
    for lookalike in ("\\u0000", "\x01\x01", "\\u0001\\u0001"):
        assert await pg.query_messages(content_type=f"te{lookalike}xt") == []
        assert await pg.query_messages(role=f"us{lookalike}er") == []
        assert await pg.query_sessions(user_id=NASTY.replace("\x00", lookalike)) == []
        assert await pg.query_tool_calls(tool_name=f"to{lookalike}ol") == []


@pytest.mark.asyncio
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=tricky_text, key=tricky_text, value=json_values)
async def test_any_text_round_trips_through_every_path(pg: Any, text: str, key: str, value: Any) -> None:
    agent = "h"
    info = sample_info(agent, template_id=text)
    info.metadata = {"userId": text, key: value}
    message = Message(role=text, content=[{"type": text, key: value}], metadata={key: text})
    record = sample_tool_call(0, name=text)
    record.id, record.input, record.result = text or "id", {key: value}, text
    snapshot = sample_snapshot(text, [message])
    await pg.save_turn(agent, info=info, messages=[message], tool_call_records=[record])
    await pg.save_snapshot(agent, snapshot)
    info.message_count = 1

    assert await pg.load_info(agent) == info
    assert await pg.load_messages(agent) == [message]
    assert await pg.load_tool_call_records(agent) == [record]
    assert await pg.load_snapshot(agent, text) == snapshot
    assert [s.agent_id for s in await pg.query_sessions(template_id=text, user_id=text)] == [agent]
    (found,) = await pg.query_messages(role=text, content_type=text)
    assert (found.content, found.metadata) == (message.content, message.metadata)
    (call,) = await pg.query_tool_calls(tool_name=text)
    assert (call.id, call.input, call.result) == (record.id, record.input, record.result)
    assert (await pg.aggregate_stats(agent)).tool_calls_by_name == {text: 1}
    await pg.delete(agent)
    await pg.clear_tombstone(agent)  # the next example re-creates it with the same created_at


@pytest.mark.asyncio
async def test_json_numbers_and_text_survive_jsonb(pg: Any) -> None:
    agent = "numbers"
    await pg.save_info(agent, sample_info(agent))
    content = [
        {"type": "text", "text": "x", "i": 2**63 - 1, "neg": -(2**63), "f": 0.1, "tiny": 1e-7, "t": True}
    ]
    await pg.save_messages(agent, [Message(role="user", content=content)])
    (loaded,) = await pg.load_messages(agent)
    assert loaded.content == content
    assert type(loaded.content[0]["f"]) is float and type(loaded.content[0]["i"]) is int


@pytest.mark.asyncio
@pytest.mark.parametrize("prepare", [True, False])
async def test_prepare_statements_option(tmp_path: Path, prepare: bool) -> None:
    options = PostgresOptions(
        dsn=require_postgres(), schema=new_schema(), min_size=1, max_size=1, prepare_statements=prepare
    )
    async with postgres_store(tmp_path, options=options) as store:
        await store.save_info("p", sample_info("p"))
        for _ in range(8):  # psycopg prepares a query on its 5th run unless told not to
            await store.save_messages("p", [sample_message(0)])
            assert await store.load_info("p") is not None

        def plan() -> Any:
            return (yield Stmt("SELECT count(*) FROM pg_prepared_statements", (), "one"))

        (prepared,) = await store.driver.run(plan, write=False)
        assert (prepared > 0) is prepare


@asynccontextmanager
async def callers_pool(min_size: int, max_size: int) -> AsyncIterator[Any]:
    """An open psycopg pool of the test server, as an application would pass to the store."""
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        require_postgres(), min_size=min_size, max_size=max_size, open=False
    )
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_caller_owned_pool_is_used_and_left_untouched(tmp_path: Path) -> None:
    async with callers_pool(min_size=1, max_size=2) as pool:
        async with postgres_store(tmp_path, pool=pool, schema=new_schema()) as store:
            agent = "owned"
            info, messages, records, _ = _nasty_agent(agent)
            await store.save_info(agent, info)
            await store.save_messages(agent, messages)
            await store.save_tool_call_records(agent, records)
            assert await store.load_messages(agent) == messages
            assert len(await store.query_messages(content_type="te\x00xt")) == 1
            async with store.agent_lock(agent, timeout_ms=100):
                pass
        assert not pool.closed  # the caller's pool: never closed by the store
        async with pool.connection() as conn:
            # neither the escape codec nor the search_path leaked into the caller's connections
            row = await (
                await conn.execute("SELECT %s::text, current_setting('search_path')", ("\ue0001",))
            ).fetchone()
            assert row == ("\ue0001", '"$user", public')


@pytest.mark.asyncio
async def test_the_factory_builds_a_postgres_store(tmp_path: Path) -> None:
    import kodestore

    schema = new_schema()
    store = await kodestore.create_extended_store(
        type="postgres",
        dsn=require_postgres(),
        schema=schema,
        file_store_base_dir=str(tmp_path / "files"),
        connection={"max": 3, "min": 0, "connection_timeout_ms": 2000},
    )
    try:
        assert isinstance(store, kodestore.PostgresStore)
        assert (store.options.schema, store.options.max_size, store.options.min_size) == (schema, 3, 0)
        await store.save_info("f", sample_info("f"))
        assert await store.list() == ["f"]
        assert (await store.driver.schema_status()).current
    finally:
        await store.close()
        await drop_schema(require_postgres(), schema)


@pytest.mark.asyncio
async def test_concurrent_saves_share_the_pool(pg: Any) -> None:
    agents = [f"c-{n}" for n in range(20)]
    await asyncio.gather(*(pg.save_info(a, sample_info(a)) for a in agents))
    await asyncio.gather(*(pg.save_messages(a, [sample_message(i) for i in range(3)]) for a in agents))
    assert (await pg.aggregate_stats()).total_messages == 60


def _pool_requests(store: Any) -> int:
    return int(store.driver._pool.get_stats().get("requests_num", 0))


@pytest.mark.asyncio
async def test_saves_in_a_row_keep_one_connection_out_of_the_pool(pg: Any) -> None:
    """A store saving turn after turn reuses the last plan's connection instead of a pool checkout
    each time; it returns it within ``KEEP_CONNECTION_S``, so the pool still manages every connection."""
    await pg.save_info("k", sample_info("k"))
    before = _pool_requests(pg)
    for n in range(1, 21):
        await pg.save_messages("k", [sample_message(i) for i in range(n)])
    assert _pool_requests(pg) - before <= 1
    assert await pg.load_messages("k") == [sample_message(i) for i in range(20)]


@pytest.mark.asyncio
async def test_a_kept_connection_goes_back_to_the_pool_in_time(
    pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kodestore.db.pg_driver.KEEP_CONNECTION_S", 0.0)
    await pg.save_info("k", sample_info("k"))
    before = _pool_requests(pg)
    for n in range(1, 11):
        await pg.save_messages("k", [sample_message(i) for i in range(n)])
    assert _pool_requests(pg) - before >= 10


@pytest.mark.asyncio
async def test_a_kept_connection_killed_by_the_server_is_replaced_without_an_error(pg: Any) -> None:
    import psycopg

    await pg.save_info("k", sample_info("k"))
    kept = pg.driver._kept
    assert kept is not None
    pid = kept[0].info.backend_pid
    async with await psycopg.AsyncConnection.connect(require_postgres(), autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(200):  # until the session is gone and its socket says so
            cursor = await admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if (await cursor.fetchone()) == (0,):
                break
            await asyncio.sleep(0.005)
    await pg.save_messages("k", [sample_message(0)])  # on another connection, at the first attempt
    assert pg.driver._kept[0].info.backend_pid != pid
    assert await pg.load_messages("k") == [sample_message(0)]


@pytest.mark.asyncio
async def test_a_callers_pool_gets_every_connection_back(tmp_path: Path) -> None:
    async with (
        callers_pool(min_size=2, max_size=2) as pool,
        postgres_store(tmp_path, pool=pool, schema=new_schema()) as store,
    ):
        await store.save_info("k", sample_info("k"))
        await store.save_messages("k", [sample_message(0)])
        assert pool.get_stats()["pool_available"] == 2


@pytest.mark.asyncio
async def test_a_kept_connection_never_starves_a_plan_waiting_for_the_pool(tmp_path: Path) -> None:
    """With one connection in the pool, concurrent calls take turns on it: the connection a call
    would keep goes back to the pool while another call waits there (else that one would wait
    until its timeout)."""
    options = PostgresOptions(
        dsn=require_postgres(), schema=new_schema(), min_size=1, max_size=1, connection_timeout_ms=1500
    )
    async with postgres_store(tmp_path, options=options) as store:
        agents = [f"w-{n}" for n in range(6)]
        started = asyncio.get_running_loop().time()
        await asyncio.gather(*(store.save_info(a, sample_info(a)) for a in agents))
        await asyncio.gather(*(store.save_messages(a, [sample_message(0)]) for a in agents))
        assert asyncio.get_running_loop().time() - started < 1.5
        assert await store.list() == sorted(agents)
