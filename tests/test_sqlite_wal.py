"""SQLite's write-ahead log under a steady write load: checkpointed off the commit path, bounded,
and never costing the event loop its other tasks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import kodestore.db.sqlite_checkpoint as checkpoint
from kodestore import SqliteStore
from kodestore.testing import sample_info, sample_message, sample_tool_call

PAGE = 4096


def _wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _save_turns(store: SqliteStore, agents: int, turns: int) -> None:
    for agent in range(agents):
        await store.save_info(f"a{agent}", sample_info(f"a{agent}"))
    for turn in range(turns):
        for agent in range(agents):
            await store.save_turn(
                f"a{agent}",
                messages=[sample_message(2 * turn, text="x" * 900), sample_message(2 * turn + 1)],
                messages_from=2 * turn,
                tool_call_records=[sample_tool_call(turn)],
                tool_call_records_from=turn,
            )


async def test_the_log_stays_bounded_and_the_database_file_takes_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "MAX_LOG_FRAMES", 200)
    db = tmp_path / "agents.db"
    store = await SqliteStore(db, tmp_path / "files").open()
    try:
        await _save_turns(store, agents=20, turns=60)  # 1,200 commits, some 10,000 pages of log
        database_bytes = db.stat().st_size
        wal_bytes = _wal_bytes(db)
        # the thread copied the log into the database file while the store was open...
        assert database_bytes > 2_000_000
        # ...and the log started over instead of growing with every commit: it spans what the
        # commits between two checkpoints wrote (about 1,800 pages), where it grows past 110 MB
        # without the checkpoint thread
        assert wal_bytes < 3_000 * PAGE, wal_bytes
    finally:
        await store.close()
    assert not db.with_name(db.name + "-wal").exists()  # the last connection checkpointed it away
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM messages").fetchone() == (20 * 60 * 2,)
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_a_save_never_checkpoints_on_its_own_connection(tmp_path: Path) -> None:
    """The default (a checkpoint inside the commit that passes 1,000 pages) is switched off for
    the store's writer, whose log the checkpoint thread keeps instead."""
    store = await SqliteStore(tmp_path / "agents.db", tmp_path / "files").open()
    try:
        conn = store._records.driver._conn
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    finally:
        await store.close()


async def test_a_task_saving_in_a_tight_loop_leaves_time_to_the_others(tmp_path: Path) -> None:
    store = await SqliteStore(tmp_path / "agents.db", tmp_path / "files").open()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    try:
        await store.save_info("a", sample_info("a"))
        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = ticks
        loop = asyncio.get_running_loop()
        began = loop.time()
        saves = 0
        while loop.time() - began < 0.05:  # 50 ms of saves, none of which waits for anything
            await store.save_turn("a", messages=[sample_message(saves)], messages_from=saves)
            saves += 1
        other.cancel()
        assert saves > 20
        assert ticks - started >= 5, (saves, ticks - started)
    finally:
        await store.close()
