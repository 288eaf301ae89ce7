"""A writer for the fault-injection tests: runs agent turns and acknowledges every call that returned.

Usage: fault_writer.py BACKEND TARGET FILES_DIR AGENTS [options]
  BACKEND   sqlite (TARGET = database path) or postgres (TARGET = DSN, with --schema)
  AGENTS    comma-separated agent ids

A turn is what a runtime saves after each model turn (like ``kodestore.demo.run_turn``): the full
history, all tool-call records, 5 events, the info, the todos, every third turn a snapshot and every
fourth a history window. After each call
returns, one JSON line describing what it acknowledged is printed and flushed, so every line a test
reads back must be in the store, however the process died::

  {"k": "messages", "a": agent, "n": count, "h": chain digest of those n messages}
  {"k": "tool_calls", "a": agent, "n": count, "h": chain digest}
  {"k": "event", "a": agent, "seq": seq}
  {"k": "info", "a": agent, "mc": message_count, "bm": bookmark seq}
  {"k": "todos", "a": agent, "v": version}
  {"k": "snapshot", "a": agent, "id": id, "n": messages in it, "h": their digest}
  {"k": "window", "a": agent, "id": id}

plus the control lines ``{"k": "opening"}`` (just before the store is opened), ``{"k": "ready"}``
(once it is open), ``{"k": "locked", "a": agent}`` and ``{"k": "done"}``.

Modes: by default each writer owns its agents, loads their state once at start (a restarted runtime)
and keeps it in memory. ``--locked``: every turn runs under the agent lock and starts by loading the
agent's state from the store (several writers sharing agents). ``--hold`` (with ``--locked``): take
each agent's lock once and keep it for the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from kodestore import (
    AgentInfo,
    Bookmark,
    HistoryWindow,
    Message,
    Snapshot,
    SqliteStore,
    Timeline,
    TodoSnapshot,
    ToolCallRecord,
)
from kodestore.config import Durability
from kodestore.extended import ExtendedStore
from kodestore.validation import ms_to_iso, now_ms

EVENTS_PER_TURN = 5
SNAPSHOT_EVERY = 3
WINDOW_EVERY = 4
SNAPSHOT_MESSAGES = 20  # a snapshot keeps the tail of the history: bounded cost on long runs
_WORDS = ("agent", "store", "turn", "tool", "file", "plan", "test", "event", "result", "é", "😀", "\x00")
Ack = dict[str, Any]


@dataclass(frozen=True)
class StoreSpec:
    """Where a store lives: turned into this script's arguments, or opened in a test."""

    backend: str
    target: str
    files_dir: str
    schema: str = "public"
    durability: Durability = "os"

    def arguments(self, agents: Iterable[str]) -> list[str]:
        """The command-line arguments that make this script write ``agents`` to this store."""
        where = [self.backend, self.target, self.files_dir, ",".join(agents)]
        return [*where, "--schema", self.schema, "--durability", self.durability]

    async def open(self) -> ExtendedStore:
        store: ExtendedStore
        if self.backend == "sqlite":
            store = SqliteStore(self.target, self.files_dir, durability=self.durability)
        else:
            from kodestore.db.postgres import PostgresStore

            store = PostgresStore(self.target, self.files_dir, schema=self.schema, durability=self.durability)
        return await store.open()


def chain(previous: str, item: dict[str, Any]) -> str:
    """Digest of a list, extended by one item: every prefix of a list has its own digest."""
    data = previous.encode() + orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


def prefix_digests(items: Sequence[dict[str, Any]]) -> list[str]:
    """``digests[n]`` is the digest of ``items[:n]``."""
    digests = [""]
    for item in items:
        digests.append(chain(digests[-1], item))
    return digests


@dataclass
class AgentState:
    """One agent as the runtime holds it between turns."""

    info: AgentInfo
    messages: list[Message]
    records: list[ToolCallRecord]
    seq: int = 0
    message_digests: list[str] = field(default_factory=lambda: [""])
    record_digests: list[str] = field(default_factory=lambda: [""])

    def __post_init__(self) -> None:
        self.message_digests = prefix_digests([m.to_dict() for m in self.messages])
        self.record_digests = prefix_digests([r.to_dict() for r in self.records])


async def load_state(store: ExtendedStore, agent_id: str) -> AgentState | None:
    """The agent's saved state; events after the info's bookmark count (a crash may precede save_info)."""
    info = await store.load_info(agent_id)
    if info is None:
        return None
    since = info.last_bookmark.seq if info.last_bookmark else None
    seq = since or 0
    async for event in store.read_events(agent_id, since=since):
        seq = max(seq, event.bookmark.seq)
    messages = await store.load_messages(agent_id)
    records = await store.load_tool_call_records(agent_id)
    return AgentState(info, messages, records, seq)


async def create_agent(store: ExtendedStore, agent_id: str, ack: Callable[[Ack], None]) -> AgentState:
    info = AgentInfo(agent_id=agent_id, template_id="fault", created_at=ms_to_iso(now_ms()))
    await store.save_info(agent_id, info)
    ack({"k": "info", "a": agent_id, "mc": 0, "bm": None})
    return AgentState(info, [], [])


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


async def run_turn(
    store: ExtendedStore, state: AgentState, writer: str, rng: random.Random, ack: Callable[[Ack], None]
) -> None:
    """One runtime turn, acknowledging each call after it returned."""
    agent = state.info.agent_id
    turn = len(state.messages) // 2
    call_id = f"call-{writer}-{turn}"
    meta = {"writer": writer, "turn": turn}
    tool_use = {"type": "tool_use", "id": call_id, "name": "fs_read", "input": {"path": _text(rng, 2)}}
    for message in (
        Message("user", [{"type": "text", "text": _text(rng, 40)}], meta),
        Message("assistant", [{"type": "text", "text": _text(rng, 30)}, tool_use], meta),
    ):
        state.messages.append(message)
        state.message_digests.append(chain(state.message_digests[-1], message.to_dict()))
    started = now_ms()
    record = ToolCallRecord(
        id=call_id,
        name="fs_read",
        input={"path": "x"},
        state="COMPLETED",
        approval={"required": False},
        result={"ok": True, "writer": writer},
        started_at=started,
        completed_at=started + 1,
        duration_ms=1,
        created_at=started,
        updated_at=started + 1,
    )
    state.records.append(record)
    state.record_digests.append(chain(state.record_digests[-1], record.to_dict()))

    await store.save_messages(agent, state.messages)
    ack({"k": "messages", "a": agent, "n": len(state.messages), "h": state.message_digests[-1]})
    await store.save_tool_call_records(agent, state.records)
    ack({"k": "tool_calls", "a": agent, "n": len(state.records), "h": state.record_digests[-1]})
    for _ in range(EVENTS_PER_TURN):
        state.seq += 1
        event = {"channel": "progress", "type": "text_chunk", "writer": writer, "delta": _text(rng, 8)}
        await store.append_event(agent, Timeline(state.seq, Bookmark(state.seq, now_ms()), event))
        ack({"k": "event", "a": agent, "seq": state.seq})
    state.info.message_count = len(state.messages)
    state.info.last_sfp_index = len(state.messages) - 1
    state.info.last_bookmark = Bookmark(state.seq, now_ms())
    await store.save_info(agent, state.info)
    ack({"k": "info", "a": agent, "mc": len(state.messages), "bm": state.seq})
    todo = {"id": f"todo-{turn}", "content": _text(rng, 4), "status": "completed"}
    await store.save_todos(agent, TodoSnapshot([todo], version=turn + 1, updated_at=now_ms()))
    ack({"k": "todos", "a": agent, "v": turn + 1})
    if turn % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1:
        await save_snapshot(store, state, f"snap-{writer}-{turn}", ack)
    if turn % WINDOW_EVERY == WINDOW_EVERY - 1:
        window = HistoryWindow(f"win-{writer}-{turn}", state.messages[-4:], [], {"turn": turn}, now_ms())
        await store.save_history_window(agent, window)
        ack({"k": "window", "a": agent, "id": window.id})


async def save_snapshot(
    store: ExtendedStore, state: AgentState, snapshot_id: str, ack: Callable[[Ack], None]
) -> None:
    tail = state.messages[-SNAPSHOT_MESSAGES:]
    snapshot = Snapshot(
        id=snapshot_id,
        messages=tail,
        last_sfp_index=len(state.messages) - 1,
        last_bookmark=Bookmark(state.seq, now_ms()),
        created_at=ms_to_iso(now_ms()),
    )
    await store.save_snapshot(state.info.agent_id, snapshot)
    digest = prefix_digests([m.to_dict() for m in tail])[-1]
    ack({"k": "snapshot", "a": state.info.agent_id, "id": snapshot_id, "n": len(tail), "h": digest})


def print_ack(entry: Ack) -> None:
    sys.stdout.write(orjson.dumps(entry).decode() + "\n")
    sys.stdout.flush()


@asynccontextmanager
async def held(store: ExtendedStore, agent_id: str, locked: bool) -> AsyncIterator[None]:
    if not locked:
        yield
        return
    async with store.agent_lock(agent_id, timeout_ms=60_000):
        print_ack({"k": "locked", "a": agent_id})
        yield


async def load_or_create(store: ExtendedStore, agent_id: str) -> AgentState:
    return await load_state(store, agent_id) or await create_agent(store, agent_id, print_ack)


async def write(args: argparse.Namespace) -> None:
    spec = StoreSpec(args.backend, args.target, args.files_dir, args.schema, args.durability)
    agents = args.agents.split(",")
    rng = random.Random(args.seed)
    await asyncio.sleep(max(0.0, args.start_at - time.time()))  # several writers start at one instant
    print_ack({"k": "opening"})
    store = await spec.open()
    try:
        print_ack({"k": "ready"})
        async with AsyncExitStack() as stack:
            kept: dict[str, AgentState] = {}  # agents whose state stays in memory all run
            if not args.locked or args.hold:
                for agent in agents:
                    await stack.enter_async_context(held(store, agent, args.hold))
                    kept[agent] = await load_or_create(store, agent)
            for _ in itertools.count() if args.turns == 0 else range(args.turns):
                for agent in agents:
                    if agent in kept:
                        await run_turn(store, kept[agent], args.writer, rng, print_ack)
                        continue
                    async with held(store, agent, True):
                        state = await load_or_create(store, agent)
                        await run_turn(store, state, args.writer, rng, print_ack)
        print_ack({"k": "done"})
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("backend", choices=("sqlite", "postgres"))
    parser.add_argument("target")
    parser.add_argument("files_dir")
    parser.add_argument("agents")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--durability", choices=("os", "fsync"), default="os")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--turns", type=int, default=0, help="turns per agent; 0 = until killed")
    parser.add_argument("--writer", default="w0", help="this writer's name, kept in what it writes")
    parser.add_argument("--locked", action="store_true", help="every turn under the agent lock")
    parser.add_argument("--hold", action="store_true", help="with --locked: keep each lock all run")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock time to start at")
    asyncio.run(write(parser.parse_args()))


if __name__ == "__main__":
    main()
