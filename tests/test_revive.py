"""A deleted agent comes back with a newer info, whichever process deleted it.

The store skips the tombstone check of its files on an info update once it has revived the agent
in this process; these tests pin down that a re-creation still revives it: after a deletion by
another store on the same data, and after a crash left a tombstone beside a live agent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_test_schema, make_store

from kodestore import AgentDeleted, SqliteStore
from kodestore.testing import sample_info, sample_timeline


@pytest.fixture(params=["sqlite", "postgres"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """Two stores, as two processes would open them, on the same database and files."""
    first = await make_store(request.param, tmp_path)
    if request.param == "sqlite":
        second = await SqliteStore(tmp_path / "db" / "agents.db", tmp_path / "files").open()
    else:
        from helpers.pg_env import make_test_postgres_store

        second = await make_test_postgres_store(tmp_path, schema=first.schema)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()
        await drop_test_schema(first)


async def _events(store: Any, agent_id: str) -> list[int]:
    return [event.bookmark.seq async for event in store.read_events(agent_id)]


async def test_a_newer_info_revives_an_agent_another_process_deleted(two_stores: tuple[Any, Any]) -> None:
    holder, deleter = two_stores
    old = sample_info("a")
    await holder.save_info("a", old)
    await holder.append_event("a", sample_timeline(1))
    await holder.save_info("a", old)  # an update: the holder now knows the agent as alive

    await deleter.delete("a")
    with pytest.raises(AgentDeleted):
        await holder.save_info("a", old)  # created before the deletion: a late write
    with pytest.raises(AgentDeleted):
        await holder.append_event("a", sample_timeline(2))

    newer = sample_info("a")
    newer.created_at = "2999-01-01T00:00:00.000Z"
    await holder.save_info("a", newer)  # re-creates the agent, so its files take writes again
    await holder.append_event("a", sample_timeline(3))
    assert await _events(holder, "a") == [3]
    assert await _events(deleter, "a") == [3]
    assert (await deleter.load_info("a")).created_at == newer.created_at


async def test_a_tombstone_left_beside_a_live_agent_goes_with_the_next_open(tmp_path: Path) -> None:
    """A process killed between re-creating an agent's row and removing its tombstone file."""
    store = await SqliteStore(tmp_path / "agents.db", tmp_path / "files").open()
    await store.save_info("a", sample_info("a"))
    await store.close()
    (tmp_path / "files" / "a").mkdir(parents=True, exist_ok=True)
    (tmp_path / "files" / "a" / ".deleted").write_text("1")

    reopened = await SqliteStore(tmp_path / "agents.db", tmp_path / "files").open()
    try:
        await reopened.save_info("a", sample_info("a"))  # an update, the first in this process
        await reopened.append_event("a", sample_timeline(1))
        assert await _events(reopened, "a") == [1]
    finally:
        await reopened.close()
