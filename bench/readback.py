"""W2 analyst queries and W3 resume, run on the store W1 just filled."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.stats import NS_PER_MS, median, percentile
from bench.workload import TEMPLATES, TOOLS, agent_id, resume_seq
from kodestore import Bookmark

QUERY_REPEATS = 20  # per query kind, each with different arguments


async def _timed(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter_ns()
    result = await call(*args, **kwargs)
    return (time.perf_counter_ns() - started) / NS_PER_MS, result


def _summary(samples: list[float], rows: list[int]) -> dict[str, float]:
    return {"p50_ms": median(samples), "p99_ms": percentile(samples, 99), "rows": median(rows)}


async def analyst_queries(store: Any, agents: int, repeats: int = QUERY_REPEATS) -> dict[str, Any]:
    """W2: median latency of each query kind, over ``repeats`` different arguments."""
    kinds: dict[str, tuple[Callable[..., Awaitable[Any]], Callable[[int], dict[str, Any]]]] = {
        "query_sessions(template_id, limit=20)": (
            store.query_sessions,
            lambda i: {"template_id": TEMPLATES[i % len(TEMPLATES)], "limit": 20},
        ),
        "query_messages(agent_id, role=assistant)": (
            store.query_messages,
            lambda i: {"agent_id": agent_id(i * 7 % agents), "role": "assistant"},
        ),
        "query_tool_calls(tool_name, state=FAILED)": (
            store.query_tool_calls,
            lambda i: {"tool_name": TOOLS[i % len(TOOLS)], "state": "FAILED"},
        ),
        "aggregate_stats(agent_id)": (
            store.aggregate_stats,
            lambda i: {"agent_id": agent_id(i * 7 % agents)},
        ),
    }
    results: dict[str, Any] = {}
    for name, (query, arguments) in kinds.items():
        samples: list[float] = []
        rows: list[int] = []
        for i in range(repeats):
            elapsed, found = await _timed(query, **arguments(i))
            samples.append(elapsed)
            rows.append(len(found) if isinstance(found, list) else 1)
        results[name] = _summary(samples, rows)
    return results


async def resume(store: Any, agents: int, turns: int) -> dict[str, Any]:
    """W3: per agent load_info, load_messages, load_tool_call_records, read_events(since=100th)."""
    since = Bookmark(resume_seq(turns), 0)
    steps: dict[str, list[float]] = {"load_info": [], "load_messages": [], "load_tool_call_records": []}
    steps["read_events(since)"] = []
    totals: list[float] = []
    for index in range(agents):
        aid = agent_id(index)
        started = time.perf_counter_ns()
        for step in ("load_info", "load_messages", "load_tool_call_records"):
            elapsed, _ = await _timed(getattr(store, step), aid)
            steps[step].append(elapsed)
        elapsed, _ = await _timed(_drain, store.read_events(aid, since=since))
        steps["read_events(since)"].append(elapsed)
        totals.append((time.perf_counter_ns() - started) / NS_PER_MS)
    return {
        "agent_p50_ms": median(totals),
        "agent_p99_ms": percentile(totals, 99),
        "total_ms": sum(totals),
        "steps_p50_ms": {name: median(samples) for name, samples in steps.items()},
    }


async def _drain(events: Any) -> int:
    count = 0
    async for _ in events:
        count += 1
    return count
