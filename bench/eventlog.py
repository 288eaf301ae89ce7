"""W3 at log scale: ``read_events(since)`` at 1k, 100k (and 1M) events in one agent's log.

One log grows through the public ``append_event``; at each size the bench times reading the last
100 events after a bookmark (should not depend on the size) and one full read (grows with the size,
while memory must stay flat: the log is streamed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.stats import NS_PER_MS, median
from bench.stores import open_store, tree_bytes
from bench.workload import BASE_MS
from kodestore import Bookmark, Timeline

AGENT = "bench-log"
TAIL = 100  # events read after the bookmark
READS = 7


def rss_kb() -> int:
    """Current resident set size (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * 4
    except OSError:
        return 0


async def _append(store: Any, first: int, last: int) -> None:
    delta = "x" * 72
    for seq in range(first, last + 1):
        event = {"channel": "progress", "type": "text_chunk", "delta": delta}
        await store.append_event(AGENT, Timeline(seq, Bookmark(seq, BASE_MS + seq), event))


def bytes_read(store: Any) -> int | None:
    """Bytes the log's reads have read so far (an internal counter of the JSONL side), if it has one."""
    try:
        return int(store._files._events.get(store._files.agent_dir(AGENT)).log.bytes_read)
    except (AttributeError, TypeError):
        return None


async def _read(store: Any, since: int | None) -> tuple[float, int, int]:
    """(ms, events, largest RSS growth in KB seen while reading)."""
    base = peak = rss_kb()
    count = 0
    started = time.perf_counter_ns()
    async for _ in store.read_events(AGENT, since=since):
        count += 1
        if count % 10_000 == 0:
            peak = max(peak, rss_kb())
    elapsed = (time.perf_counter_ns() - started) / NS_PER_MS
    return elapsed, count, max(peak, rss_kb()) - base


async def log_scaling(root: Path, sizes: list[int]) -> list[dict[str, Any]]:
    store = await open_store("sqlite", root)
    rows: list[dict[str, Any]] = []
    try:
        written = 0
        for size in sorted(sizes):
            started = time.perf_counter()
            await _append(store, written + 1, size)
            fill_s = time.perf_counter() - started
            written = size
            read_before = bytes_read(store)
            tail = [await _read(store, size - TAIL) for _ in range(READS)]
            read_after = bytes_read(store)
            full_ms, full_count, full_rss = await _read(store, None)
            assert all(count == TAIL for _, count, _ in tail) and full_count == size
            rows.append(
                {
                    "events": size,
                    "since_p50_ms": median([ms for ms, _, _ in tail]),
                    "since_bytes_read": None
                    if read_before is None or read_after is None
                    else (read_after - read_before) // READS,
                    "full_read_ms": full_ms,
                    "full_read_rss_growth_kb": full_rss,
                    "log_bytes": tree_bytes(root / "files"),
                    "append_us": fill_s * 1e6 / max(1, size - (rows[-1]["events"] if rows else 0)),
                }
            )
    finally:
        await store.close()
    return rows
