"""Deterministic W1 payloads: what a runtime adds to one agent's state in one turn.

Everything derives from a fixed seed, so every round, every system and every backend persists the
same bytes. Payloads are the SDK's JSON shapes (plain dicts); the store drivers turn them into models
before timing starts, as a runtime holds models, and the floor persists the dicts directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SEED = 20_240_607
BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed timestamps keep payloads identical per run
EVENTS_PER_TURN = 5
RESUME_EVENT = 100  # W3 resumes from each agent's 100th event
TOOLS = ("fs_read", "fs_write", "bash_run", "web_fetch", "grep_search")
TEMPLATES = ("coder", "researcher", "reviewer")
_WORDS = (  # noqa: SIM905 - a sentence reads better than 31 quoted words
    "agent store turn tool file read write plan test query event history summary result patch diff"
    " branch commit review build deploy cache index schema column row page lock retry budget token"
).split()

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn's new data for one agent: two messages, one tool call, five events, a bookmark."""

    turn: int
    user: JSON
    assistant: JSON
    record: JSON
    events: tuple[JSON, ...]
    last_seq: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """An agent's identity and its turns, in order."""

    agent_id: str
    info: JSON
    turns: tuple[Turn, ...]


def agent_id(index: int) -> str:
    return f"bench-{index:05d}"


def _text(rng: random.Random, chars: int) -> str:
    words = rng.choices(_WORDS, k=chars // 4 + 8)
    return " ".join(words)[:chars]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def new_info(index: int) -> JSON:
    """The agent's info as first saved, before any turn."""
    return {
        "agentId": agent_id(index),
        "templateId": TEMPLATES[index % len(TEMPLATES)],
        "createdAt": _iso(BASE_MS + index),
        "lineage": [],
        "configVersion": "v1",
        "messageCount": 0,
        "lastSfpIndex": -1,
        "metadata": {"userId": f"user-{index % 10}", "project": f"proj-{index % 4}"},
    }


def make_turn(rng: random.Random, aid: str, turn: int) -> Turn:
    """Turn ``turn`` (0-based) of agent ``aid``; every 7th tool call fails."""
    ts = BASE_MS + 1000 * (turn + 1)
    call_id = f"call-{aid}-{turn}"
    tool = TOOLS[rng.randrange(len(TOOLS))]
    failed = turn % 7 == 6
    user = {"role": "user", "content": [{"type": "text", "text": _text(rng, 400)}]}
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": _text(rng, 300)},
            {"type": "tool_use", "id": call_id, "name": tool, "input": {"path": f"src/{turn}.py"}},
        ],
    }
    record: JSON = {
        "id": call_id,
        "name": tool,
        "input": {"path": f"src/{turn}.py"},
        "state": "FAILED" if failed else "COMPLETED",
        "approval": {"required": tool == "bash_run", "decision": "allow"},
        "result": None if failed else {"ok": True, "bytes": 100 + turn},
        "error": "exit status 1" if failed else None,
        "isError": failed,
        "startedAt": ts,
        "completedAt": ts + 5,
        "durationMs": 5,
        "createdAt": ts,
        "updatedAt": ts + 5,
        "auditTrail": [{"state": "FAILED" if failed else "COMPLETED", "timestamp": ts + 5}],
    }
    first = turn * EVENTS_PER_TURN + 1
    events = tuple(
        {
            "cursor": seq,
            "bookmark": {"seq": seq, "timestamp": ts + seq % EVENTS_PER_TURN},
            "event": {"channel": "progress", "type": "text_chunk", "step": turn, "delta": _text(rng, 80)},
        }
        for seq in range(first, first + EVENTS_PER_TURN)
    )
    return Turn(turn, user, assistant, record, events, first + EVENTS_PER_TURN - 1, ts + EVENTS_PER_TURN)


def agent_plan(index: int, turns: int, seed: int = SEED) -> AgentPlan:
    """Agent ``index`` with ``turns`` turns; the same arguments always give the same payloads."""
    rng = random.Random(seed * 1_000_003 + index)
    aid = agent_id(index)
    return AgentPlan(aid, new_info(index), tuple(make_turn(rng, aid, t) for t in range(turns)))


def build(agents: int, turns: int, seed: int = SEED) -> list[AgentPlan]:
    return [agent_plan(i, turns, seed) for i in range(agents)]


def update_info(info: JSON, messages: int, turn: Turn) -> None:
    """What the runtime records in the info after a turn: message count and last bookmark."""
    info["messageCount"] = messages
    info["lastSfpIndex"] = messages - 1
    info["lastBookmark"] = {"seq": turn.last_seq, "timestamp": turn.timestamp}


def resume_seq(turns: int) -> int:
    """The bookmark W3 resumes from: the 100th event, or half the log when it is shorter."""
    return min(RESUME_EVENT, turns * EVENTS_PER_TURN // 2)
