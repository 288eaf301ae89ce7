"""W1 "save after every turn": agents round-robin, each turn persisted and timed on its own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.stats import decile_p50s, latency_summary
from bench.stores import AgentModels
from bench.workload import AgentPlan, update_info

Floor = Any  # SqliteFloor | PostgresFloor: create_agent / save_turn / close


@dataclass(slots=True)
class Timings:
    """Per-turn latencies in the order they ran, with the turn index of each."""

    samples_ns: list[int] = field(default_factory=list)
    turn_index: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process, all threads: steadier than wall time on a busy machine

    def summary(self, turns: int) -> dict[str, Any]:
        count = len(self.samples_ns)
        return {
            "turns_total": count,
            "wall_s": self.wall_s,
            "turns_per_s": count / self.wall_s if self.wall_s else 0.0,
            "cpu_s": self.cpu_s,
            **latency_summary(self.samples_ns),
            "decile_p50_ms": decile_p50s(self.samples_ns, self.turn_index, turns),
        }


def run_floor(floor: Floor, plans: list[AgentPlan], turns: int) -> Timings:
    """The floor, synchronously: no event loop, no thread."""
    infos = [dict(plan.info) for plan in plans]
    created = [1_000 * i for i in range(len(plans))]
    for info, created_ms in zip(infos, created, strict=True):
        floor.create_agent(info, created_ms)
    timings = Timings()
    clock = time.perf_counter_ns
    cpu = time.process_time()
    started = clock()
    for t in range(turns):
        for plan, info, created_ms in zip(plans, infos, created, strict=True):
            turn = plan.turns[t]
            before = clock()
            update_info(info, 2 * (t + 1), turn)
            floor.save_turn(plan.agent_id, turn, 2 * t, info, created_ms)
            timings.samples_ns.append(clock() - before)
            timings.turn_index.append(t)
    timings.wall_s = (clock() - started) / 1e9
    timings.cpu_s = time.process_time() - cpu
    return timings


async def run_store(
    store: Any,
    agents: list[AgentModels],
    turns: int,
    save: Callable[[Any, AgentModels, int], Awaitable[None]],
) -> Timings:
    """The store, from the event loop, with ``save`` being one of the two call styles."""
    for agent in agents:
        await store.save_info(agent.agent_id, agent.info)
    timings = Timings()
    clock = time.perf_counter_ns
    cpu = time.process_time()
    started = clock()
    for t in range(turns):
        for agent in agents:
            before = clock()
            await save(store, agent, t)
            timings.samples_ns.append(clock() - before)
            timings.turn_index.append(t)
    timings.wall_s = (clock() - started) / 1e9
    timings.cpu_s = time.process_time() - cpu
    return timings
