"""kodestore under W1: the runtime's per-turn call sequence, and the one-call ``save_turn``.

Payload dicts become models before timing starts (a runtime holds models); inside the timed part
the store does everything it does for a real runtime, conversions and validation included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import AgentPlan
from kodestore import AgentInfo, Bookmark, Message, Timeline, ToolCallRecord


@dataclass(slots=True)
class TurnModels:
    user: Message
    assistant: Message
    record: ToolCallRecord
    events: list[Timeline]
    bookmark: Bookmark


@dataclass(slots=True)
class AgentModels:
    """One agent's runtime state (grows turn by turn) and its prepared turns."""

    agent_id: str
    info: AgentInfo
    turns: list[TurnModels]
    history: list[Message]
    records: list[ToolCallRecord]


def to_models(plan: AgentPlan) -> AgentModels:
    turns = [
        TurnModels(
            Message.from_dict(t.user),
            Message.from_dict(t.assistant),
            ToolCallRecord.from_dict(t.record),
            [Timeline.from_dict(e) for e in t.events],
            Bookmark(t.last_seq, t.timestamp),
        )
        for t in plan.turns
    ]
    return AgentModels(plan.agent_id, AgentInfo.from_dict(dict(plan.info)), turns, [], [])


def _advance(agent: AgentModels, turn: TurnModels) -> None:
    """The runtime's in-memory update before it saves: history, records and info."""
    agent.history.append(turn.user)
    agent.history.append(turn.assistant)
    agent.records.append(turn.record)
    count = len(agent.history)
    agent.info.message_count = count
    agent.info.last_sfp_index = count - 1
    agent.info.last_bookmark = turn.bookmark


async def save_by_calls(store: Any, agent: AgentModels, index: int) -> None:
    """W1 as the runtime calls it: full history, all records, 5 events one by one, then the info."""
    turn = agent.turns[index]
    _advance(agent, turn)
    aid = agent.agent_id
    await store.save_messages(aid, agent.history)
    await store.save_tool_call_records(aid, agent.records)
    for event in turn.events:
        await store.append_event(aid, event)
    await store.save_info(aid, agent.info)


async def save_in_one_call(store: Any, agent: AgentModels, index: int) -> None:
    """W1 through ``save_turn``: one call per turn, carrying what the turn appended (the history
    and records from where the previous turn's save ended) with the info and the events."""
    turn = agent.turns[index]
    saved_messages, saved_records = len(agent.history), len(agent.records)
    _advance(agent, turn)
    await store.save_turn(
        agent.agent_id,
        messages=agent.history[saved_messages:],
        messages_from=saved_messages,
        tool_call_records=agent.records[saved_records:],
        tool_call_records_from=saved_records,
        info=agent.info,
        events=turn.events,
    )


async def open_store(backend: str, root: Path, dsn: str = "", schema: str = "") -> Any:
    """A fresh, opened store: SQLite under ``root``, or Postgres in ``schema``, JSONL under ``root``."""
    import kodestore

    files = root / "files"
    if backend == "sqlite":
        return await kodestore.SqliteStore(root / "agents.db", files).open()
    return await kodestore.create_extended_store(
        type="postgres", dsn=dsn, schema=schema, file_store_base_dir=str(files)
    )


def tree_bytes(root: Path, suffix: str = "") -> int:
    """Bytes of every data file under ``root`` (SQLite's shared-memory index and lock files excluded),
    or of those whose name ends with ``suffix``."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith(suffix) and not name.endswith(("-shm", ".lock")):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total
