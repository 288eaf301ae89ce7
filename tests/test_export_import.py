"""``Store.export_agents`` and ``Store.import_agent``, and the timestamps that backup, restore and
migrate carry through them: each message's first-save ``created_at`` and each agent's ``updated_at``
must come out of a copy exactly as they went in, not as the time of the copy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import make_store
from helpers.pg_env import new_schema, postgres_store, require_postgres
from test_ops_data import Stores, fill_agent

from kodestore import AgentDeleted, InvalidAgentId, JSONStore, SqliteStore, StoreClosed, ops
from kodestore.backend import AgentRecords
from kodestore.db.base import Stmt
from kodestore.models import AgentInfo, Message
from kodestore.ops.backup import AGENTS_FILE, MANIFEST_FILE, file_digest
from kodestore.testing import sample_info, sample_message, sample_snapshot, sample_timeline, sample_tool_call
from kodestore.validation import now_ms

JSONish = list[dict[str, Any]]


def _info(agent_id: str, template_id: str = "tpl-default", message_count: int = 0) -> AgentInfo:
    info = sample_info(agent_id, template_id)
    info.message_count = message_count
    return info


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    async with Stores(tmp_path) as opened:
        yield opened


async def _grow(store: Any, agent_id: str, turns: int, template: str = "tpl-a") -> list[Message]:
    """An agent whose history grows turn by turn, a few ms apart: every turn's messages have their own
    first-save time, and the agent's last update is the end of its last turn."""
    await store.save_info(agent_id, sample_info(agent_id, template))
    history: list[Message] = []
    for turn in range(turns):
        history += [sample_message(2 * turn, text=f"{agent_id} {turn}"), sample_message(2 * turn + 1)]
        await store.save_messages(agent_id, history)
        await store.save_tool_call_records(agent_id, [sample_tool_call(i) for i in range(turn + 1)])
        await asyncio.sleep(0.003)
    await store.save_snapshot(agent_id, sample_snapshot("sfp-1", history[:2]))
    return history


async def _fill_over_time(store: Any) -> None:
    for i in range(4):
        await _grow(store, f"agent-{i}", turns=2 + i, template=f"tpl-{i % 2}")
    await fill_agent(store, "awkward", messages=3, events=2)
    await asyncio.sleep(0.003)
    await store.save_messages("agent-0", await store.load_messages("agent-0"))  # created first, updated last


async def _timestamps(store: Any) -> tuple[JSONish, JSONish]:
    """Every message (with ``createdAt``) and every session (with ``updatedAt``), as queries show them."""
    messages = await store.query_messages(limit=1000)
    sessions = await store.query_sessions(sort_by="updated_at", limit=1000)
    return [m.to_dict() for m in messages], [s.to_dict() for s in sessions]


async def _all_before_now(store: Any) -> None:
    """Wait until the clock is past every timestamp in ``store``: a copy that stamped its own time
    instead of keeping the source's could then not pass for a faithful one."""
    messages, sessions = await _timestamps(store)
    latest = max([m["createdAt"] for m in messages] + [s["updatedAt"] for s in sessions])
    await asyncio.sleep(0.01)
    assert now_ms() > latest


# ---- through backup, restore and migrate ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_backup_and_restore_keep_every_timestamp(stores: Stores, tmp_path: Path, backend: str) -> None:
    source = await stores.new(backend, "source")
    await _fill_over_time(source)
    expected = await _timestamps(source)
    assert len({m["createdAt"] for m in expected[0]}) > 5  # distinct times, so a mix-up would show
    await _all_before_now(source)
    await ops.backup(source, tmp_path / "backup")
    target = await stores.new(backend, "target")
    await ops.restore_into(tmp_path / "backup", target)
    messages, sessions = await _timestamps(target)
    assert messages == expected[0]
    assert sessions == expected[1]
    assert sessions[0]["agentId"] == "agent-0"  # sorted by updated_at, newest first


async def test_sqlite_to_postgres_to_sqlite_keeps_every_timestamp(stores: Stores) -> None:
    first = await stores.new("sqlite", "first")
    await _fill_over_time(first)
    expected = await _timestamps(first)
    await _all_before_now(first)
    middle = await stores.new("postgres", "middle")
    await ops.migrate(first, middle)
    last = await stores.new("sqlite", "last")
    await ops.migrate(middle, last)
    await ops.migrate(middle, last)  # again: nothing to do, and nothing restamped
    for store in (middle, last):
        messages, sessions = await _timestamps(store)
        assert messages == expected[0]
        assert sessions == expected[1]


async def test_a_backup_of_format_1_restores_with_new_timestamps(stores: Stores, tmp_path: Path) -> None:
    """Backups written before the timestamps were kept still restore; the restore time stands in."""
    source = await stores.new("sqlite", "source")
    await fill_agent(source, "a1")
    manifest = await ops.backup(source, tmp_path / "backup")
    agents = tmp_path / "backup" / AGENTS_FILE
    line = orjson.loads(agents.read_bytes())
    del line["messageCreatedAtMs"], line["updatedAtMs"]
    agents.write_bytes(orjson.dumps(line) + b"\n")
    manifest["formatVersion"] = 1
    manifest["files"][AGENTS_FILE] = file_digest(agents)
    (tmp_path / "backup" / MANIFEST_FILE).write_bytes(orjson.dumps(manifest))
    started = now_ms()
    target = await stores.new("sqlite", "target")
    await ops.restore_into(tmp_path / "backup", target)
    messages, sessions = await _timestamps(target)
    assert len(messages) == 4 and all(m["createdAt"] >= started for m in messages)
    assert sessions[0]["updatedAt"] >= started


# ---- the store methods ---------------------------------------------------------------------------


async def test_export_returns_the_records_and_the_timestamps_queries_show(store: Any) -> None:
    history = await _grow(store, "a1", turns=3)
    await _grow(store, "a2", turns=1)
    exported = await store.export_agents(["a2", "nobody", "a1", "a2"])
    assert list(exported) == ["a2", "a1"]  # the order given; unknown and repeated ids once or never
    records = exported["a1"]
    assert records.info == await store.load_info("a1")
    assert records.messages == history == await store.load_messages("a1")
    assert records.tool_calls == await store.load_tool_call_records("a1")
    assert records.snapshots == await store.list_snapshots("a1")
    queried = sorted(await store.query_messages(agent_id="a1", limit=100), key=lambda m: m.seq)
    assert records.message_created_at == [m.created_at for m in queried]
    [session] = await store.query_sessions(agent_id="a1")
    assert records.updated_at_ms == session.updated_at
    assert store.consistent_export


async def test_export_of_many_ids_reads_them_all_in_one_call(store: Any) -> None:
    await _grow(store, "k-0001", turns=1)
    await _grow(store, "k-1199", turns=1)
    ids = [f"k-{i:04d}" for i in range(1200)]  # more ids than one IN list takes
    assert list(await store.export_agents(ids)) == ["k-0001", "k-1199"]
    assert await store.export_agents([]) == {}


async def test_import_replaces_everything_and_twice_changes_nothing(store: Any) -> None:
    await _grow(store, "a1", turns=4)
    await store.save_snapshot("a1", sample_snapshot("sfp-2", []))
    records = AgentRecords(
        _info("a1", "other", message_count=2),
        [sample_message(0, text="new"), sample_message(1)],
        [sample_tool_call(7)],
        [sample_snapshot("sfp-9", [])],
        [1_000, 2_000],
        3_000,
    )
    await store.import_agent("a1", records)
    once = (await store.export_agents(["a1"]))["a1"]
    assert once == records
    await store.import_agent("a1", records)
    assert (await store.export_agents(["a1"]))["a1"] == once
    assert [m.created_at for m in await store.query_messages(agent_id="a1")] == [2_000, 1_000]
    assert [s.updated_at for s in await store.query_sessions(agent_id="a1")] == [3_000]
    assert (await store.check_consistency("a1")).consistent


async def test_import_without_timestamps_keeps_first_save_times_it_already_holds(store: Any) -> None:
    history = await _grow(store, "a1", turns=2)
    exported = (await store.export_agents(["a1"]))["a1"]
    started = now_ms()
    grown = [*history, sample_message(9, text="imported")]
    await store.import_agent("a1", AgentRecords(exported.info, grown))
    after = (await store.export_agents(["a1"]))["a1"]
    assert after.message_created_at is not None and exported.message_created_at is not None
    assert after.message_created_at[:-1] == exported.message_created_at
    assert after.message_created_at[-1] >= started
    assert after.updated_at_ms is not None and after.updated_at_ms >= started


async def test_import_re_creates_a_deleted_agent(store: Any) -> None:
    records = AgentRecords(sample_info("a1"), [sample_message(0)], message_created_at=[5])
    await store.save_info("a1", records.info)
    await store.delete("a1")
    with pytest.raises(AgentDeleted):  # a late write of the deleted agent...
        await store.save_info("a1", records.info)
    await store.import_agent("a1", records)  # ...but an import is a deliberate re-creation
    assert await store.load_messages("a1") == records.messages
    await store.append_event("a1", sample_timeline(1))  # the files' tombstone went too
    assert [t.cursor async for t in store.read_events("a1")] == [1]


async def test_saves_after_an_import_see_the_imported_rows(store: Any) -> None:
    """The diff cache of the importing store is what it wrote; a save that follows keeps the
    imported first-save times and writes only the new message."""
    records = AgentRecords(
        sample_info("a1"), [sample_message(0), sample_message(1)], message_created_at=[10, 20]
    )
    await store.import_agent("a1", records)
    await store.save_messages("a1", [*records.messages, sample_message(2)])
    created = [m.created_at for m in sorted(await store.query_messages(agent_id="a1"), key=lambda m: m.seq)]
    assert created[:2] == [10, 20] and created[2] > 20


async def test_an_import_by_another_process_invalidates_the_writers_cache(tmp_path: Path) -> None:
    """Two stores on one SQLite file stand for two processes: the writer must not trust the hashes it
    cached before the other one imported."""
    where = (tmp_path / "agents.db", tmp_path / "files")
    async with SqliteStore(*where) as writer, SqliteStore(*where) as importer:
        await writer.save_info("a1", sample_info("a1"))
        await writer.save_messages("a1", [sample_message(0, text="old"), sample_message(1, text="old")])
        imported = [sample_message(0, text="new"), sample_message(1, text="new")]
        await importer.import_agent(
            "a1", AgentRecords(sample_info("a1"), imported, message_created_at=[10, 20])
        )
        await writer.save_messages("a1", [*imported, sample_message(2)])
        messages = sorted(await writer.query_messages(agent_id="a1"), key=lambda m: m.seq)
        assert [m.created_at for m in messages][:2] == [10, 20]
        assert await writer.load_messages("a1") == [*imported, sample_message(2)]


@pytest.mark.parametrize(
    ("records", "error"),
    [
        (AgentRecords(sample_info("a1"), [sample_message(0)], message_created_at=[1, 2]), "2 times for 1"),
        (AgentRecords(sample_info("a1"), message_created_at=[-1]), "epoch milliseconds"),
        (AgentRecords(sample_info("a1"), updated_at_ms=True), "updated_at_ms"),
        (AgentRecords(sample_info("other")), "differs from agent_id"),
        (AgentRecords(sample_info("a1"), [{"role": "user"}]), "records.messages"),  # type: ignore[list-item]
        (AgentRecords(sample_info("a1"), tool_calls=[sample_tool_call(1)] * 2), "duplicate tool call id"),
        (
            AgentRecords(sample_info("a1"), snapshots=[sample_snapshot("s", [])] * 2),
            "snapshot id appears twice",
        ),
        ({"info": sample_info("a1").to_dict()}, "must be AgentRecords"),
    ],
)
async def test_a_bad_import_is_refused_before_anything_is_written(
    any_store: Any, records: Any, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        await any_store.import_agent("a1", records)
    assert await any_store.list() == []


async def test_bad_arguments_and_a_closed_store(tmp_path: Path) -> None:
    store = await make_store("memory", tmp_path)
    with pytest.raises(InvalidAgentId):
        await store.export_agents(["ok", "../etc"])
    with pytest.raises(InvalidAgentId):
        await store.import_agent("a/b", AgentRecords(sample_info("a/b")))
    with pytest.raises(ValueError, match="list of agent ids"):
        await store.export_agents("a1")
    await store.close()
    with pytest.raises(StoreClosed):
        await store.export_agents(["a1"])


async def test_json_store_round_trip_without_timestamps(tmp_path: Path) -> None:
    """The file-only store keeps the SDK's shapes only: no snapshot read, no timestamps."""
    async with JSONStore(tmp_path / "json") as store:
        assert not store.consistent_export
        records = AgentRecords(
            _info("a1", message_count=2),
            [sample_message(0), sample_message(1)],
            [sample_tool_call(0)],
            [sample_snapshot("s1", [])],
            [10, 20],
            30,
        )
        await store.import_agent("a1", records)
        await store.import_agent("a1", records)
        exported = (await store.export_agents(["a1", "a2"]))["a1"]
        assert exported == AgentRecords(records.info, records.messages, records.tool_calls, records.snapshots)
        assert await store.list() == ["a1"]


async def test_postgres_exports_from_one_read_only_repeatable_read_snapshot(tmp_path: Path) -> None:
    """Also on a caller's pool, whose transactions start with ``SET LOCAL search_path``: the isolation
    level can still be set, as it must come before the first query."""
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(require_postgres(), min_size=1, open=False)
    await pool.open(wait=True)
    try:
        async with postgres_store(tmp_path, pool=pool, schema=new_schema()) as store:
            await _grow(store, "a1", turns=1)
            assert list(await store.export_agents(["a1"])) == ["a1"]

            def plan() -> Any:
                yield from store._records.export_plan(["a1"])
                isolation = yield Stmt("SHOW transaction_isolation", (), "one")
                read_only = yield Stmt("SHOW transaction_read_only", (), "one")
                return isolation[0], read_only[0]

            assert await store.driver.run(plan, write=False) == ("repeatable read", "on")
    finally:
        await pool.close()


async def test_export_and_import_are_timed(store: Any) -> None:
    before = (await store.get_metrics()).operations
    await store.import_agent("a1", AgentRecords(sample_info("a1")))
    await store.export_agents(["a1"])
    after = (await store.get_metrics()).operations
    assert (after.saves - before.saves, after.loads - before.loads) == (1, 1)
