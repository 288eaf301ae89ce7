"""Several processes on one store at once: different agents, and one agent under its lock.

Every writer starts at the same instant on a store nobody has opened yet, so the opens (and the
schema migration) race too.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.fault_check import WriterRun, drop_spec, new_spec, verify, verify_spec
from helpers.fault_writer import EVENTS_PER_TURN, Ack, StoreSpec

from kodestore import SqliteStore
from kodestore.extended import ExtendedStore
from kodestore.testing import sample_info

WRITERS = 4
TURNS = 12

BACKEND_PARAMS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def run_writers(spec: StoreSpec, agents_of: list[list[str]], *options: str) -> list[WriterRun]:
    """Start one writer per agent list at one instant; all must exit cleanly."""
    start_at = str(time.time() + 1.5)
    runs = [
        await WriterRun.start(
            spec, agents, "--writer", f"w{i}", "--turns", str(TURNS), "--start-at", start_at, *options
        )
        for i, agents in enumerate(agents_of)
    ]
    codes = await asyncio.gather(*(run.finish() for run in runs))
    for code, run in zip(codes, runs, strict=True):
        errors = run.error_text()
        assert code == 0 and "database is locked" not in errors, f"writer failed (rc={code}): {errors}"
    return runs


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
async def test_processes_writing_different_agents(backend: str, tmp_path: Path) -> None:
    """4 processes, 2 agents each, on one fresh store: no "database is locked", nothing lost."""
    spec = new_spec(backend, tmp_path)
    try:
        agents_of = [[f"agent-{i}-a", f"agent-{i}-b"] for i in range(WRITERS)]
        runs = await run_writers(spec, agents_of)
        acks = [ack for run in runs for ack in run.acks]
        verified = await verify_spec(spec, acks)
        per_turn = 1 + 1 + EVENTS_PER_TURN + 1  # messages, tool calls, events, info (+ snapshots)
        assert verified.acks_checked >= WRITERS * 2 * (1 + TURNS * per_turn)
        store = await spec.open()
        try:
            assert await store.list() == sorted(a for agents in agents_of for a in agents)
            for agents in agents_of:
                for agent in agents:
                    assert len(await store.load_messages(agent)) == 2 * TURNS
                    assert len(await store.load_tool_call_records(agent)) == TURNS
                    assert len([e async for e in store.read_events(agent)]) == EVENTS_PER_TURN * TURNS
        finally:
            await store.close()
    finally:
        await drop_spec(spec)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
async def test_processes_writing_one_agent_under_its_lock(backend: str, tmp_path: Path) -> None:
    """4 processes take turns on one agent, each loading it under the lock and saving a whole turn.

    No turn may be lost (a lost update would drop another writer's messages), every event is there
    exactly once in ascending seq, and the final state is one writer's complete turn.
    """
    spec = new_spec(backend, tmp_path)
    agent = "shared"
    try:
        runs = await run_writers(spec, [[agent]] * WRITERS, "--locked")
        acks: list[Ack] = [ack for run in runs for ack in run.acks]
        store = await spec.open()
        try:
            await verify(store, acks)
            await _check_serialised_turns(store, agent)
        finally:
            await store.close()
    finally:
        await drop_spec(spec)


async def _check_serialised_turns(store: ExtendedStore, agent: str) -> None:
    total = WRITERS * TURNS
    messages = await store.load_messages(agent)
    records = await store.load_tool_call_records(agent)
    events = [e async for e in store.read_events(agent)]
    info = await store.load_info(agent)
    assert info is not None and info.last_bookmark is not None
    assert len(messages) == 2 * total and len(records) == total, "a turn was lost or duplicated"
    assert [e.bookmark.seq for e in events] == list(range(1, EVENTS_PER_TURN * total + 1))
    turns_by_writer: Counter[str] = Counter()
    for turn in range(total):
        user, assistant = messages[2 * turn : 2 * turn + 2]
        writer = str((user.metadata or {})["writer"])
        assert (user.role, assistant.role) == ("user", "assistant")
        assert user.metadata == assistant.metadata == {"writer": writer, "turn": turn}, "a torn turn"
        assert records[turn].id == f"call-{writer}-{turn}"
        turn_events = events[EVENTS_PER_TURN * turn : EVENTS_PER_TURN * (turn + 1)]
        assert {e.event["writer"] for e in turn_events} == {writer}, "events of two turns interleaved"
        turns_by_writer[writer] += 1
    assert turns_by_writer == {f"w{i}": TURNS for i in range(WRITERS)}
    assert info.message_count == 2 * total
    assert info.last_bookmark.seq == EVENTS_PER_TURN * total


async def test_opening_a_new_sqlite_file_waits_for_another_opener(tmp_path: Path) -> None:
    """Converting a new file to WAL while another connection holds the write lock (another process's
    open, mid-way) fails at once, without the busy handler: SQLite sees a possible deadlock. The
    store retries within its busy timeout, so workers starting together on a new file all open."""
    path = tmp_path / "agents.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, other.execute, ("COMMIT",))
    release.start()
    started = time.monotonic()
    try:
        async with SqliteStore(path, tmp_path / "files") as store:
            await store.save_info("a1", sample_info("a1"))
            assert await store.load_info("a1") == sample_info("a1")
    finally:
        release.join()
        other.close()
    assert time.monotonic() - started >= 0.25  # it waited for the other opener rather than failing
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        check.close()
