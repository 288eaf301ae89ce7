"""The two durability modes side by side: ``python -m bench.durability``.

``os`` (the default) returns once data is written to the OS and survives a killed process;
``fsync`` survives power loss. Measured on the SQLite store: ``append_event`` one at a time and 50 at
once (the fsync mode's group commit lets concurrent appends share one fsync), and whole turns with
``save_turn``. Medians of 3 rounds, each in a fresh directory.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from kodestore import SqliteStore
from kodestore.config import Durability
from kodestore.testing import sample_info, sample_message, sample_timeline

ROUNDS = 3
CONCURRENT = 50


async def _sequential_appends(store: SqliteStore, count: int) -> float:
    started = time.perf_counter()
    for seq in range(1, count + 1):
        await store.append_event("agent", sample_timeline(seq))
    return count / (time.perf_counter() - started)


async def _concurrent_appends(store: SqliteStore, count: int) -> float:
    started = time.perf_counter()
    for first in range(1, count + 1, CONCURRENT):
        batch = range(first, min(first + CONCURRENT, count + 1))
        await asyncio.gather(*(store.append_event("agent", sample_timeline(seq)) for seq in batch))
    return count / (time.perf_counter() - started)


async def _turns(store: SqliteStore, count: int) -> float:
    info = sample_info("agent")
    history = []
    started = time.perf_counter()
    for turn in range(count):
        history += [sample_message(2 * turn), sample_message(2 * turn + 1)]
        events = [sample_timeline(5 * turn + i) for i in range(1, 6)]
        await store.save_turn("agent", messages=history, info=info, events=events)
    return count / (time.perf_counter() - started)


Workload = Callable[[SqliteStore, int], Awaitable[float]]
WORKLOADS: dict[str, tuple[Workload, int, int]] = {  # name -> (run, count in os mode, in fsync mode)
    "append_event, one at a time (events/s)": (_sequential_appends, 20_000, 2_000),
    f"append_event, {CONCURRENT} at once (events/s)": (_concurrent_appends, 20_000, 5_000),
    "save_turn, 40-turn history (turns/s)": (_turns, 40, 40),
}


async def _round(workload: Workload, count: int, durability: Durability) -> float:
    with tempfile.TemporaryDirectory() as root:
        store = SqliteStore(f"{root}/agents.db", f"{root}/files", durability=durability)
        async with await store.open():
            return await workload(store, count)


async def measure() -> list[tuple[str, float, float]]:
    rows = []
    for name, (workload, os_count, fsync_count) in WORKLOADS.items():
        os_rate = statistics.median([await _round(workload, os_count, "os") for _ in range(ROUNDS)])
        fsync_rate = statistics.median([await _round(workload, fsync_count, "fsync") for _ in range(ROUNDS)])
        rows.append((name, os_rate, fsync_rate))
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    rows = asyncio.run(measure())
    width = max(len(name) for name, _, _ in rows)
    print(f"{'SQLite store, medians of 3'.ljust(width)}  {'os':>10}  {'fsync':>10}")
    for name, os_rate, fsync_rate in rows:
        print(f"{name.ljust(width)}  {os_rate:>10,.0f}  {fsync_rate:>10,.0f}")


if __name__ == "__main__":
    main()
