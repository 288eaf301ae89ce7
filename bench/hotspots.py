"""Where a W1 turn's time goes in the SQLite store: ``python -m bench.hotspots [--cprofile]``.

Wraps the store's internal steps with timers (no profiler overhead on the rest) and prints the mean
cost per turn of each: facade work, serialising and hashing rows, the SQL itself (in the driver's
thread), the thread hop around it, event appends; with the statements, commits and bytes written
(``/proc/self/io`` wchar) per turn beside the floor's. Then each statement kind's time per turn
(``BEGIN``, ``COMMIT``, ``UPDATE agents``...) in the floor, the floor's 4-call sequence and the
store, timed around each ``execute`` of SQLite's connections: what the store's SQL costs beyond the
floor's. ``--cprofile`` adds cProfile listings of the event-loop thread and of the SQLite thread.
Reads the store's internals; changes nothing on disk outside a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import re
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench import workload
from bench.floor import SqliteFloor
from bench.stores import open_store, save_by_calls, save_in_one_call, to_models
from bench.w1 import run_floor, run_store

Clock = Counter[str]


def wchar() -> int:
    """Bytes this process handed to write syscalls so far (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/io") as stats:
            return next(int(line.split()[1]) for line in stats if line.startswith("wchar"))
    except (OSError, StopIteration):
        return 0


def _timed_sync(clock: Clock, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[key] += time.perf_counter_ns() - started

    return wrapper


def _timed_async(clock: Clock, key: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return await fn(*args, **kwargs)
        finally:
            clock[key] += time.perf_counter_ns() - started

    return wrapper


def instrument(store: Any, clock: Clock) -> None:
    """Time the store's steps through its module and instance attributes (this process only).

    Steps the store does not have (any more) are simply not timed; their time shows as "rest"."""
    import kodestore.db.records as records
    import kodestore.db.sqlite as sqlite_driver

    for name in ("message_rows", "tool_call_rows", "info_row"):
        if hasattr(records, name):
            setattr(records, name, _timed_sync(clock, name, getattr(records, name)))
    # a full-list save encodes the whole list to see what changed, then builds the new rows
    for name, key in (("_message_rows", "message list"), ("_tool_call_rows", "record list")):
        lists = getattr(store._records, name, None)
        if lists is not None:
            lists.rows = _timed_sync(clock, key, lists.rows)
    execute = sqlite_driver._execute

    def counting_execute(conn: Any, stmt: Any) -> Any:
        clock["statements"] += 1
        return execute(conn, stmt)

    sqlite_driver._execute = counting_execute
    driver = store._records.driver
    for name, key in (("_run_in_thread", "sql in thread"), ("_run_inline", "sql inline")):
        if hasattr(driver, name):
            setattr(driver, name, _counted(clock, key, getattr(driver, name)))
    driver.run = _timed_async(clock, "driver.run", driver.run)
    for name in ("append_event", "append_events"):
        if hasattr(store._files, name):
            setattr(store._files, name, _timed_async(clock, "append_event", getattr(store._files, name)))


def _counted(clock: Clock, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    timed = _timed_sync(clock, key, fn)

    def wrapper(*args: Any) -> Any:
        clock["transactions"] += 1
        return timed(*args)

    return wrapper


@lru_cache(maxsize=256)
def statement_kind(sql: str) -> str:
    """``UPDATE agents``, ``INSERT messages``, ``COMMIT``...: a statement's verb and table."""
    found = re.match(r"\s*(INSERT INTO|UPDATE|DELETE FROM|SELECT|\w+)\s*(\w*)", sql, re.IGNORECASE)
    if found is None:
        return sql[:20]
    verb, table = found.groups()
    return f"{verb.split()[0].upper()} {table}".strip()


@dataclass(slots=True)
class StatementClock:
    """Nanoseconds and calls per statement kind."""

    ns: Clock = field(default_factory=Counter)
    calls: Clock = field(default_factory=Counter)

    def add(self, kind: str, elapsed_ns: int) -> None:
        self.ns[kind] += elapsed_ns
        self.calls[kind] += 1

    def clear(self) -> None:
        self.ns.clear()
        self.calls.clear()


class _TimedConnection(sqlite3.Connection):
    """A connection that adds each statement's time to ``statements`` by kind; a statement run off
    the main thread (the store's checkpoints) counts under its kind marked "(other thread)"."""

    statements: StatementClock

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        started = time.perf_counter_ns()
        try:
            return super().execute(sql, parameters)
        finally:
            self._add(sql, time.perf_counter_ns() - started)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        started = time.perf_counter_ns()
        try:
            return super().executemany(sql, parameters)
        finally:
            self._add(sql, time.perf_counter_ns() - started)

    def _add(self, sql: str, elapsed_ns: int) -> None:
        kind = statement_kind(sql)
        if threading.current_thread() is not threading.main_thread():
            kind += " (other thread)"
        self.statements.add(kind, elapsed_ns)


@contextmanager
def timed_statements(statements: StatementClock) -> Iterator[None]:
    """Every SQLite connection opened meanwhile (the floor's, the store's) times its statements."""
    connect = sqlite3.connect

    def timed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, factory=_TimedConnection, **kwargs)
        conn.statements = statements  # type: ignore[attr-defined]
        return conn

    sqlite3.connect = timed_connect  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = connect


def statement_table(statements: StatementClock, count: int) -> list[str]:
    """``us per turn, statements per turn, kind`` lines over ``count`` turns, the costliest first."""
    kinds = sorted(statements.ns, key=statements.ns.__getitem__, reverse=True)
    total = sum(statements.ns[kind] for kind in kinds if not kind.endswith("(other thread)"))
    lines = [f"{total / count / 1000:8.1f} us  SQL per turn on the saving thread"]
    for kind in kinds:
        us, calls = statements.ns[kind] / count / 1000, statements.calls[kind] / count
        lines.append(f"{us:8.1f} us  {calls:5.2f} x  {kind}")
    return lines


async def measure_store(
    system: str, agents: int, turns: int, profile: bool = False, statements: StatementClock | None = None
) -> tuple[Clock, float, int]:
    """The store's W1 with its steps timed (``instrument``); ``statements``: also each SQL statement's
    time, cleared when the timed turns start (opening and creating the agents left out)."""
    plans = [to_models(plan) for plan in workload.build(agents, turns)]
    clock: Clock = Counter()
    with tempfile.TemporaryDirectory(prefix="kodestore-hotspots-") as directory:
        store = await open_store("sqlite", Path(directory))
        instrument(store, clock)
        for agent in plans:  # create the agents outside the measurement
            await store.save_info(agent.agent_id, agent.info)
        clock.clear()
        if statements is not None:
            statements.clear()
        profilers = (cProfile.Profile(), cProfile.Profile()) if profile else None
        loop = asyncio.get_running_loop()
        if profilers:
            await loop.run_in_executor(store._records.driver._executor, profilers[1].enable)
            profilers[0].enable()
        written = wchar()
        timings = await run_store(
            store, plans, turns, save_by_calls if system == "calls" else save_in_one_call
        )
        written = wchar() - written
        if profilers:
            profilers[0].disable()
            await loop.run_in_executor(store._records.driver._executor, profilers[1].disable)
            for name, profiler in zip(("event-loop thread", "SQLite thread"), profilers, strict=True):
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
                print(f"---- cProfile, {system}, {name} (top by own time) ----")
                print(text.getvalue().split("\n\n", 2)[-1].rstrip())
        await store.close()
    return clock, timings.wall_s, written


def measure_floor(
    agents: int, turns: int, per_call: bool = False, statements: StatementClock | None = None
) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="kodestore-hotspots-") as directory:
        floor = SqliteFloor(Path(directory), per_call=per_call)
        if statements is not None:
            statements.clear()  # the schema's statements; the agents' creation stays (1 in 40 turns)
        written = wchar()
        timings = run_floor(floor, workload.build(agents, turns), turns)
        written = wchar() - written
        floor.close()
    return timings.wall_s, written


async def hop_cost(samples: int = 2000) -> float:
    """Mean µs of one round trip to a one-thread executor and back (what a no-op query costs)."""
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1) as executor:
        await loop.run_in_executor(executor, int)
        started = time.perf_counter_ns()
        for _ in range(samples):
            await loop.run_in_executor(executor, int)
        return (time.perf_counter_ns() - started) / samples / 1000


def breakdown(clock: Clock, wall_s: float, written: int, count: int) -> list[tuple[str, str]]:
    us = {key: value / count / 1000 for key, value in clock.items()}
    sql = us.get("sql in thread", 0.0) + us.get("sql inline", 0.0)
    hop = us.get("driver.run", 0.0) - sql
    row_keys = ("message_rows", "tool_call_rows", "info_row", "message list", "record list")
    rows_us = sum(us.get(key, 0.0) for key in row_keys)
    total = wall_s * 1e6 / count
    return [
        ("total per turn", f"{total:8.1f} us"),
        ("  SQL in the driver's thread", f"{us.get('sql in thread', 0.0):8.1f} us"),
        ("  SQL inline on the loop thread", f"{us.get('sql inline', 0.0):8.1f} us"),
        ("  thread hops and waiting for the thread", f"{hop:8.1f} us"),
        ("  message_rows (encode + hash)", f"{us.get('message_rows', 0.0):8.1f} us"),
        ("  tool_call_rows (to_dict + encode + hash)", f"{us.get('tool_call_rows', 0.0):8.1f} us"),
        ("  info_row", f"{us.get('info_row', 0.0):8.1f} us"),
        ("  whole history, encoded to see what changed", f"{us.get('message list', 0.0):8.1f} us"),
        ("  whole record list, likewise", f"{us.get('record list', 0.0):8.1f} us"),
        ("  event appends (loop thread)", f"{us.get('append_event', 0.0):8.1f} us"),
        (
            "  facade, models, asyncio, rest",
            f"{total - us.get('driver.run', 0.0) - rows_us - us.get('append_event', 0.0):8.1f} us",
        ),
        ("transactions per turn", f"{clock['transactions'] / count:8.2f}"),
        ("statements per turn (BEGIN/COMMIT excluded)", f"{clock['statements'] / count:8.2f}"),
        ("bytes written per turn (wchar)", f"{written / count:8.0f}"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotspots", description=__doc__)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--turns", type=int, default=40)
    parser.add_argument("--cprofile", action="store_true", help="also print cProfile listings")
    args = parser.parse_args()
    count = args.agents * args.turns
    floor_s, floor_written = measure_floor(args.agents, args.turns)
    print(
        f"floor: {floor_s * 1e6 / count:.1f} us per turn, {floor_written / count:.0f} bytes written per turn"
    )
    print(f"one thread hop (run_in_executor round trip, no work): {asyncio.run(hop_cost()):.1f} us")
    for system in ("calls", "turn"):
        clock, wall_s, written = asyncio.run(measure_store(system, args.agents, args.turns, args.cprofile))
        print(f"\n== kodestore, {'4 calls' if system == 'calls' else 'save_turn'} per turn ==")
        for label, value in breakdown(clock, wall_s, written, count):
            print(f"{label:48} {value}")
    print("\n== SQL per turn by statement, timed inside execute (the wrapper adds ~1 us each) ==")
    runs: list[tuple[str, Callable[[StatementClock], object]]] = [
        ("floor", lambda statements: measure_floor(args.agents, args.turns, statements=statements)),
        (
            "floor, 4-call sequence",
            lambda statements: measure_floor(args.agents, args.turns, True, statements),
        ),
        (
            "kodestore, 4 calls",
            lambda statements: asyncio.run(
                measure_store("calls", args.agents, args.turns, statements=statements)
            ),
        ),
        (
            "kodestore, save_turn",
            lambda statements: asyncio.run(
                measure_store("turn", args.agents, args.turns, statements=statements)
            ),
        ),
    ]
    for label, run in runs:
        statements = StatementClock()
        with timed_statements(statements):
            run(statements)
        print(f"-- {label}")
        print("\n".join(statement_table(statements, count)))


if __name__ == "__main__":
    main()
