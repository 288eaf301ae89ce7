"""Postgres connections killed by the server mid-run (``pg_terminate_backend``, as in a restart or a
failover): the call in flight may fail, with a ``StorageError``; the run goes on; nothing acknowledged
is lost.

Only this module's connections are terminated: its stores connect with a unique ``application_name``,
so other tests using the same server are not disturbed.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_DSN, require_postgres
from helpers.fault_check import drop_spec, verify_spec
from helpers.fault_writer import Ack, StoreSpec, create_agent, run_turn

from kodestore import KodeStoreError, LockLost, StorageError

pytestmark = pytest.mark.postgres

ROUNDS = 5
ROUND_INTERVAL_S = 0.3
WRITERS = 2
RETRIES = 3


class RetryingStore:
    """Forwards every call to the store; a call failing with a ``StorageError`` is retried, as a
    runtime would, and each failure recorded as (round, agent, call number). Any other error fails
    the test."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.round = 0
        self.calls = 0
        self.failures: list[tuple[int, str, int, str]] = []

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._store, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            number = self.calls
            for attempt in range(RETRIES + 1):
                try:
                    return await method(*args, **kwargs)
                except StorageError as exc:
                    self.failures.append((self.round, str(args[0]), number, f"{name}: {exc}"))
                    if attempt == RETRIES:
                        raise

        return call


def store_spec(tmp_path: Path) -> tuple[StoreSpec, str]:
    """A fresh schema, reached with an ``application_name`` that only this store uses."""
    require_postgres()
    import psycopg.conninfo

    application_name = f"ks_fault_{uuid.uuid4().hex[:12]}"
    dsn = psycopg.conninfo.make_conninfo(TEST_DSN, application_name=application_name)
    return StoreSpec(
        "postgres", dsn, str(tmp_path / "files"), f"t_fault_{uuid.uuid4().hex[:12]}"
    ), application_name


async def terminate(application_name: str = "", pid: int = 0) -> int:
    """Kill the server sessions of one store (or one session), and wait until they are gone."""
    import psycopg

    where = "pid = %s" if pid else "application_name = %s"
    async with await psycopg.AsyncConnection.connect(TEST_DSN, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT array_agg(pid) FILTER (WHERE pg_terminate_backend(pid))"
            f" FROM pg_stat_activity WHERE {where}",
            (pid or application_name,),
        )
        row = await cursor.fetchone()
        pids = list(row[0] or []) if row else []
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            cursor = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            found = await cursor.fetchone()
            if not found or not found[0]:
                break
            await asyncio.sleep(0.005)
        return len(pids)


async def test_terminated_connections_lose_no_acknowledged_write(tmp_path: Path) -> None:
    """Two writers run turns (each under its agent lock) while every session of the store, pool and
    lock session alike, is terminated five times: each round breaks at most the one call each writer
    had in flight, the call succeeds when retried, writing continues, and every acknowledgement holds."""
    spec, application_name = store_spec(tmp_path)
    acks: list[Ack] = []
    store = await spec.open()
    retrying = RetryingStore(store)
    stop = asyncio.Event()
    locks_lost: list[str] = []

    async def write(agent: str) -> int:
        rng = random.Random(agent)
        state = await create_agent(retrying, agent, acks.append)  # type: ignore[arg-type]
        turns = 0
        while not stop.is_set():
            try:
                async with store.agent_lock(agent, timeout_ms=10_000):
                    await run_turn(retrying, state, agent, rng, acks.append)  # type: ignore[arg-type]
            except LockLost:
                locks_lost.append(agent)  # the holder is told; its acknowledged writes still count
            turns += 1
        return turns

    killed = []
    acks_at_last_round = 0
    try:
        writers = [asyncio.ensure_future(write(f"agent-{i}")) for i in range(WRITERS)]
        for round_no in range(1, ROUNDS + 1):
            await asyncio.sleep(ROUND_INTERVAL_S)
            assert not any(w.done() for w in writers), [w.exception() for w in writers if w.done()]
            retrying.round = round_no
            killed.append(await terminate(application_name))
            acks_at_last_round = len(acks)
        await asyncio.sleep(ROUND_INTERVAL_S)  # the run must go on after the last round
        stop.set()
        turns = await asyncio.gather(*writers)
    finally:
        stop.set()
        await store.close()
    try:
        assert all(killed), f"a round found no session of the store to kill: {killed}"
        assert len(acks) > acks_at_last_round, "no write succeeded after the last round"
        failed_calls: dict[tuple[int, str], set[int]] = defaultdict(set)
        for round_no, agent, number, _ in retrying.failures:
            failed_calls[round_no, agent].add(number)
        assert all(len(calls) <= 1 for calls in failed_calls.values()), (
            f"more than the in-flight call failed in one round: {retrying.failures}"
        )
        verified = await verify_spec(spec, acks)
        assert verified.acks_checked == len(acks)
        print(
            f"\npostgres terminations: {sum(killed)} sessions in {ROUNDS} rounds, turns {turns},"
            f" failed attempts {len(retrying.failures)} in {len(failed_calls)} calls,"
            f" acknowledged writes checked {len(acks)}"
        )
    finally:
        await drop_spec(spec)


async def test_connection_dying_after_the_checkout_check_does_not_fail_the_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the test above can hit, made deterministic: the server closes a connection right after
    its checkout check. Nothing had reached COMMIT, so the driver runs the plan again on another
    connection and the call succeeds."""
    from psycopg_pool import AsyncConnectionPool

    check = AsyncConnectionPool.check_connection
    armed = False

    async def check_then_die(conn: Any) -> None:
        nonlocal armed
        await check(conn)
        if armed:
            armed = False
            await terminate(pid=conn.info.backend_pid)

    monkeypatch.setattr(AsyncConnectionPool, "check_connection", staticmethod(check_then_die))
    # the driver skips the round-trip check while the socket is quiet; this test needs it to run
    monkeypatch.setattr("kodestore.db.pg_driver._quiet", lambda conn: False)
    spec, _ = store_spec(tmp_path)
    store = await spec.open()
    try:
        acks: list[Ack] = []
        state = await create_agent(store, "agent", acks.append)
        armed = True
        await run_turn(store, state, "w", random.Random(0), acks.append)
        assert not armed, "the check was never called"
    finally:
        await store.close()
        await drop_spec(spec)


async def test_holder_is_told_when_its_lock_session_is_lost(tmp_path: Path) -> None:
    """The holder's lock session is terminated (failover, idle-session timeout, an admin) and the
    server frees the lock, so another process takes it. Exclusivity is over, and the holder must
    learn it before it believes its turn was written alone: a save for the agent, or at the latest
    its ``release()``, raises a ``KodeStoreError``. (How it is told is the fix's choice.)"""
    spec, application_name = store_spec(tmp_path)
    holder = await spec.open()
    other = await StoreSpec("postgres", TEST_DSN, str(tmp_path / "other"), spec.schema).open()
    try:
        state = await create_agent(holder, "agent", lambda ack: None)
        release = await holder.acquire_agent_lock("agent")
        await terminate(application_name)
        taken = await other.acquire_agent_lock("agent", timeout_ms=5_000)  # the server freed it
        try:
            told = []
            for call in (
                lambda: run_turn(holder, state, "holder", random.Random(7), lambda ack: None),
                release,
            ):
                try:
                    await call()
                except KodeStoreError as exc:
                    told.append(exc)
            assert told, "the holder wrote its turn and released the lock as if it had held it alone"
        finally:
            await taken()
    finally:
        await holder.close()
        await other.close()
        await drop_spec(spec)
