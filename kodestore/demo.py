"""A simulated agent runtime: the calls a KODE-style runtime makes after every turn.

Used by ``kodestore demo`` (and the README's quick start) to fill a store with realistic sessions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kodestore.facade import Store
from kodestore.models import AgentInfo, Bookmark, Message, Timeline, ToolCallRecord
from kodestore.validation import ms_to_iso, now_ms

TOOLS = ("fs_read", "fs_write", "bash_run", "web_fetch", "grep_search")
TEMPLATES = ("coder", "researcher", "reviewer")
_WORDS = (
    "agent",
    "store",
    "turn",
    "tool",
    "file",
    "read",
    "write",
    "plan",
    "test",
    "query",
    "event",
    "history",
    "summary",
    "result",
)


@dataclass
class SimulatedAgent:
    """One agent's in-memory runtime state, saved after each turn like a runtime does."""

    info: AgentInfo
    messages: list[Message]
    records: list[ToolCallRecord]
    seq: int = 0


def _text(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(_WORDS))
    return " ".join(words)[:chars]


def new_agent(agent_id: str, template_id: str, user_id: str) -> SimulatedAgent:
    info = AgentInfo(
        agent_id=agent_id,
        template_id=template_id,
        created_at=ms_to_iso(now_ms()),
        config_version="v1",
        metadata={"userId": user_id},
    )
    return SimulatedAgent(info=info, messages=[], records=[])


async def run_turn(store: Store, agent: SimulatedAgent, turn: int, rng: random.Random) -> None:
    """Append a user and an assistant message, one tool call (every 7th fails) and 5 progress
    events, then save: full history, all tool-call records, the events, the info."""
    call_id = f"call-{agent.info.agent_id}-{turn}"
    tool = rng.choice(TOOLS)
    agent.messages.append(Message("user", [{"type": "text", "text": _text(rng, 400)}]))
    agent.messages.append(
        Message(
            "assistant",
            [
                {"type": "text", "text": _text(rng, 300)},
                {"type": "tool_use", "id": call_id, "name": tool, "input": {"arg": _text(rng, 30)}},
            ],
        )
    )
    failed = turn % 7 == 6
    started = now_ms()
    agent.records.append(
        ToolCallRecord(
            id=call_id,
            name=tool,
            input={"arg": "x"},
            state="FAILED" if failed else "COMPLETED",
            approval={"required": tool == "bash_run", "decision": "allow"},
            result=None if failed else {"ok": True},
            error="tool failed" if failed else None,
            is_error=failed,
            started_at=started,
            completed_at=started + 5,
            duration_ms=5,
            created_at=started,
            updated_at=started + 5,
            audit_trail=[{"state": "COMPLETED", "timestamp": started}],
        )
    )
    await store.save_messages(agent.info.agent_id, agent.messages)
    await store.save_tool_call_records(agent.info.agent_id, agent.records)
    for _ in range(5):
        agent.seq += 1
        event = {"channel": "progress", "type": "text_chunk", "delta": _text(rng, 80)}
        await store.append_event(
            agent.info.agent_id, Timeline(agent.seq, Bookmark(agent.seq, now_ms()), event)
        )
    agent.info.message_count = len(agent.messages)
    agent.info.last_sfp_index = len(agent.messages) - 1
    agent.info.last_bookmark = Bookmark(agent.seq, now_ms())
    await store.save_info(agent.info.agent_id, agent.info)


async def simulate(store: Store, agents: int = 5, turns: int = 6, seed: int = 7) -> list[str]:
    """Create ``agents`` sessions of ``turns`` turns each, round-robin; returns their ids."""
    rng = random.Random(seed)
    sims = [new_agent(f"demo-{i:03d}", TEMPLATES[i % len(TEMPLATES)], f"user-{i % 2}") for i in range(agents)]
    for sim in sims:
        await store.save_info(sim.info.agent_id, sim.info)
    for turn in range(turns):
        for sim in sims:
            await run_turn(store, sim, turn, rng)
    return [sim.info.agent_id for sim in sims]
