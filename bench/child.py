"""One measurement in a process of its own: ``python -m bench.child '<job json>'``, JSON result on stdout.

A fresh process per (round, backend, system) gives each its own peak RSS, a cold start for every
system alike, and no garbage left over from the previous run.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from bench import pg, workload
from bench.eventlog import log_scaling, rss_kb
from bench.floor import PostgresFloor, SqliteFloor
from bench.w1 import run_floor


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def w1_floor(job: dict[str, Any], root: Path, schema: str) -> dict[str, Any]:
    plans = workload.build(job["agents"], job["turns"])
    gc.collect()
    start_rss = rss_kb()
    per_call = job["system"] == "floor_calls"
    if job["backend"] == "sqlite":
        floor: Any = SqliteFloor(root, per_call)
    else:
        floor = PostgresFloor(root, job["dsn"], schema, per_call)
    try:
        timings = run_floor(floor, plans, job["turns"])
        disk = _disk_bytes(job, root, schema)
        messages, tool_calls = floor.counts()
        check_counts(job, messages, tool_calls, root)
    finally:
        floor.close()
    return {**timings.summary(job["turns"]), **disk, "rss_start_kb": start_rss, "rss_peak_kb": peak_rss_kb()}


async def w1_store(job: dict[str, Any], root: Path, schema: str) -> dict[str, Any]:
    from bench import readback
    from bench.stores import open_store, save_by_calls, save_in_one_call, to_models
    from bench.w1 import run_store

    agents = [to_models(plan) for plan in workload.build(job["agents"], job["turns"])]
    save = save_by_calls if job["system"] == "calls" else save_in_one_call
    store = await open_store(job["backend"], root, job["dsn"], schema)
    try:
        gc.collect()
        start_rss = rss_kb()
        timings = await run_store(store, agents, job["turns"], save)
        result = {**timings.summary(job["turns"]), **_disk_bytes(job, root, schema)}
        result.update(rss_start_kb=start_rss, rss_peak_kb=peak_rss_kb())
        stats = await store.aggregate_stats()
        check_counts(job, stats.total_messages, stats.total_tool_calls, root)
        if job.get("readback"):
            result["w2"] = await readback.analyst_queries(store, job["agents"])
            result["w3"] = await readback.resume(store, job["agents"], job["turns"])
    finally:
        await store.close()
    return result


def check_counts(job: dict[str, Any], messages: int, tool_calls: int, root: Path) -> None:
    """Fail the job unless every message, tool call and event of W1 is stored, once."""
    turns = job["agents"] * job["turns"]
    events = sum(path.read_bytes().count(b"\n") for path in root.glob("files/*/events.jsonl"))
    found = (messages, tool_calls, events)
    expected = (2 * turns, turns, workload.EVENTS_PER_TURN * turns)
    if found != expected:
        raise RuntimeError(f"stored (messages, tool calls, events) {found}, expected {expected}")


def _disk_bytes(job: dict[str, Any], root: Path, schema: str) -> dict[str, int]:
    from bench.stores import tree_bytes

    files = tree_bytes(root)
    if job["backend"] == "sqlite":
        # the write-ahead log is a working file of bounded size, reused once checkpointed: shown apart
        return {"disk_bytes": files, "wal_bytes": tree_bytes(root, "-wal")}
    return {"disk_bytes": files + pg.schema_bytes(job["dsn"], schema), "file_bytes": files}


def run(job: dict[str, Any]) -> dict[str, Any]:
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kodestore-bench-")))
        schema = ""
        if job.get("backend") == "postgres":
            schema = stack.enter_context(pg.fresh_schema(job["dsn"], f"bench_{job['system']}"))
        if job["kind"] == "eventlog":
            return {"rows": asyncio.run(log_scaling(root, job["sizes"]))}
        if job["kind"] == "scale":
            from bench.scale import scale_run

            return asyncio.run(scale_run(job, root, schema))
        if job["system"] in ("floor", "floor_calls"):
            return w1_floor(job, root, schema)
        return asyncio.run(w1_store(job, root, schema))
    raise AssertionError("unreachable")


def main() -> None:
    job = orjson.loads(sys.argv[1])
    sys.stdout.buffer.write(orjson.dumps(run(job)) + b"\n")


if __name__ == "__main__":
    main()
