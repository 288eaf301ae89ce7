"""The holder of an agent lock is SIGKILLed mid-run: a waiter gets the lock at once and can go on.

SQLite's lock is a ``flock`` beside the database, Postgres's a session advisory lock; both must be
freed by the death of the holder, not by a timeout.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from helpers.fault_check import WriterRun, drop_spec, new_spec, verify
from helpers.fault_writer import Ack, load_state, run_turn

from kodestore import LockTimeout

WAIT_TIMEOUT_MS = 15_000
FREED_WITHIN_S = 2.0  # after the kill; the waiter polls every 50 ms at most


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_killed_lock_holder_frees_the_lock(backend: str, tmp_path: Path) -> None:
    spec = new_spec(backend, tmp_path)
    agent = "held"
    holder = await WriterRun.start(spec, [agent], "--locked", "--hold", "--writer", "holder")
    try:
        await holder.wait_for("locked")
        await holder.wait_for("snapshot")  # a few turns in, mid-stream
        store = await spec.open()
        try:
            with pytest.raises(LockTimeout):  # the holder really holds it
                await store.acquire_agent_lock(agent, timeout_ms=300)
            waiter = asyncio.ensure_future(store.acquire_agent_lock(agent, timeout_ms=WAIT_TIMEOUT_MS))
            await asyncio.sleep(0.3)
            assert not waiter.done(), "the lock was granted while its holder was alive"
            killed_at = time.monotonic()
            await holder.kill()
            release = await waiter
            freed_after = time.monotonic() - killed_at
            assert freed_after < FREED_WITHIN_S, f"lock freed {freed_after:.2f} s after the kill"
            print(f"\n{backend}: lock taken {freed_after * 1000:.0f} ms after its holder was killed")

            acks: list[Ack] = list(holder.acks)
            await verify(store, acks)  # nothing the dead holder acknowledged is lost
            state = await load_state(store, agent)
            assert state is not None
            await run_turn(store, state, "waiter", random.Random(1), acks.append)
            await release()
            await verify(store, acks)
        finally:
            await store.close()
    finally:
        await holder.kill()
        await drop_spec(spec)
