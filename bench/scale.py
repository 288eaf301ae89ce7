"""``--scale``: W2 on Postgres at 10,000 agents / 1,000,000 messages.

Loading goes through the public API, one ``save_turn`` per agent carrying its whole history (100
messages, 50 tool calls, its info): every row is written exactly as a runtime would have left it, in
far fewer round trips than 500,000 turns. A few agents load concurrently over the store's pool.
W2 runs on the tables as loaded, then again after ``ANALYZE``: right after a bulk load the planner has
no statistics until autovacuum gathers them (or never, where autovacuum is off), and picks plans that
are 30-70x slower.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench import pg, readback, workload
from bench.eventlog import rss_kb
from bench.stores import open_store, to_models

LOADERS = 4
SCALE_QUERY_REPEATS = 50


async def _load_agent(store: Any, index: int, turns: int) -> None:
    agent = to_models(workload.agent_plan(index, turns))
    for turn in agent.turns:
        agent.history += [turn.user, turn.assistant]
        agent.records.append(turn.record)
    agent.info.message_count = len(agent.history)
    agent.info.last_sfp_index = len(agent.history) - 1
    agent.info.last_bookmark = agent.turns[-1].bookmark
    await store.save_info(agent.agent_id, agent.info)
    await store.save_turn(
        agent.agent_id, messages=agent.history, tool_call_records=agent.records, info=agent.info
    )


async def _load(store: Any, agents: int, turns: int) -> None:
    queue = iter(range(agents))

    async def loader() -> None:
        for index in queue:
            await _load_agent(store, index, turns)

    await asyncio.gather(*(loader() for _ in range(LOADERS)))


async def scale_run(job: dict[str, Any], root: Path, schema: str) -> dict[str, Any]:
    store = await open_store("postgres", root, job["dsn"], schema)
    try:
        started = time.perf_counter()
        await _load(store, job["agents"], job["turns"])
        load_s = time.perf_counter() - started
        messages = (await store.aggregate_stats()).total_messages
        rss_before = rss_kb()
        as_loaded = await readback.analyst_queries(store, job["agents"], SCALE_QUERY_REPEATS)
        pg.analyze(job["dsn"], schema)
        w2 = await readback.analyst_queries(store, job["agents"], SCALE_QUERY_REPEATS)
        return {
            "backend": "postgres",
            "agents": job["agents"],
            "messages": messages,
            "load_s": load_s,
            "w2_as_loaded": as_loaded,
            "w2": w2,
            "w2_rss_growth_kb": rss_kb() - rss_before,
        }
    finally:
        await store.close()
