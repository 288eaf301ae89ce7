"""Median latency of each analyst query on 1,000 agents x 50 messages (SQLite by default).

    python -m bench.queries_scale                      # SQLite in a temporary directory
    python -m bench.queries_scale --dsn postgresql://… # Postgres, in a schema of its own, dropped after

Each query runs ``--repeat`` times through the public API (facade, validation, driver hop included);
the table gives the median and p95 in milliseconds and the rows returned. Deep pages compare
``offset`` with keyset ``after=`` at the same position.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kodestore import ExtendedStore, Message, SqliteStore, ToolCallRecord
from kodestore.db.queries import cursor_of
from kodestore.testing import sample_info

TEMPLATES = ["coder", "reviewer", "planner", "writer", "tester"]
TOOLS = ["fs_read", "fs_write", "bash_run", "grep_search", "web_fetch", "todo_write", "task_run", "ask"]
STATES = ["COMPLETED"] * 8 + ["FAILED", "DENIED", "PENDING"]
BASE_MS = 1_767_225_600_000


def history(rng: random.Random, agent: int, count: int) -> list[Message]:
    messages = []
    for seq in range(count):
        role = "user" if seq % 2 == 0 else "assistant"
        blocks: list[dict[str, Any]] = [{"type": "text", "text": f"agent {agent} message {seq} " * 4}]
        if role == "assistant" and rng.random() < 0.5:
            blocks.append({"type": "tool_use", "id": f"call-{seq}", "name": rng.choice(TOOLS), "input": {}})
        elif role == "user" and seq and rng.random() < 0.5:
            blocks = [{"type": "tool_result", "tool_use_id": f"call-{seq - 1}", "content": "ok"}]
        if rng.random() < 0.02:
            blocks.append({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})
        messages.append(Message(role, blocks, {"turn": seq // 2}))
    return messages


def tool_calls(rng: random.Random, count: int, start_ms: int) -> list[ToolCallRecord]:
    records = []
    for index in range(count):
        state = rng.choice(STATES)
        created = start_ms + index * 10
        records.append(
            ToolCallRecord(
                id=f"call-{index}",
                name=rng.choice(TOOLS),
                input={"arg": index},
                state=state,
                approval={"required": rng.random() < 0.2},
                is_error=state == "FAILED",
                created_at=created,
                updated_at=created + 5,
            )
        )
    return records


async def fill(store: ExtendedStore, agents: int, messages: int, calls: int, seed: int) -> None:
    rng = random.Random(seed)
    for agent in range(agents):
        agent_id = f"agt-{agent:05d}"
        info = sample_info(agent_id, template_id=TEMPLATES[agent % len(TEMPLATES)])
        info.metadata = {"userId": f"user-{agent % 50}", "team": rng.choice(["core", "infra", "ml"])}
        info.created_at = f"2026-01-01T00:{agent // 60 % 60:02d}:{agent % 60:02d}.000Z"
        await store.save_turn(
            agent_id,
            info=info,
            messages=history(rng, agent, messages),
            tool_call_records=tool_calls(rng, calls, BASE_MS + agent * 1000),
        )


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float, int]:
    await call()  # warm: statement cache, pages in memory
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    rows = len(result) if isinstance(result, list) else 1
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1], rows


async def queries(store: ExtendedStore) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The query mix, with the deep-page rows found first (the 900th session, the 40,000th message...)."""
    deep_session = (await store.query_sessions(offset=899, limit=1))[0]
    deep_message = (await store.query_messages(offset=39_999, limit=1))[0]
    deep_call = (await store.query_tool_calls(offset=7_999, limit=1))[0]
    s, m, t = store.query_sessions, store.query_messages, store.query_tool_calls
    return {
        "sessions (newest 100)": lambda: s(),
        "sessions template_id": lambda: s(template_id="coder"),
        "sessions user_id": lambda: s(user_id="user-7"),
        "sessions metadata={team}": lambda: s(metadata={"team": "ml"}),
        "sessions sort message_count": lambda: s(sort_by="message_count"),
        "sessions created range": lambda: s(created_after=BASE_MS, created_before=BASE_MS + 600_000),
        "sessions offset=900": lambda: s(offset=900),
        "sessions after row #900": lambda: s(after=cursor_of(deep_session)),
        "messages (newest 100)": lambda: m(),
        "messages agent_id": lambda: m(agent_id="agt-00500"),
        "messages role=assistant": lambda: m(role="assistant"),
        "messages content_type=tool_use": lambda: m(content_type="tool_use"),
        "messages content_type=image (rare)": lambda: m(content_type="image"),
        "messages agent + content_type": lambda: m(agent_id="agt-00500", content_type="tool_result"),
        "messages offset=40000": lambda: m(offset=40_000),
        "messages after row #40000": lambda: m(after=cursor_of(deep_message)),
        "tool calls (newest 100)": lambda: t(),
        "tool calls agent_id": lambda: t(agent_id="agt-00500"),
        "tool calls tool_name": lambda: t(tool_name="bash_run"),
        "tool calls tool_name + state": lambda: t(tool_name="bash_run", state="FAILED"),
        "tool calls state=FAILED": lambda: t(state="FAILED"),
        "tool calls is_error": lambda: t(is_error=True),
        "tool calls has_approval": lambda: t(has_approval=True),
        "tool calls created range": lambda: t(created_after=BASE_MS, created_before=BASE_MS + 100_000),
        "tool calls offset=8000": lambda: t(offset=8_000),
        "tool calls after row #8000": lambda: t(after=cursor_of(deep_call)),
        "aggregate_stats (all agents)": lambda: store.aggregate_stats(),
        "aggregate_stats (one agent)": lambda: store.aggregate_stats("agt-00500"),
    }


async def open_store(args: argparse.Namespace, directory: Path) -> ExtendedStore:
    if not args.dsn:
        return await SqliteStore(directory / "agents.db", directory / "store").open()
    from kodestore import PostgresStore

    schema = f"bench_queries_{uuid.uuid4().hex[:12]}"
    store: ExtendedStore = PostgresStore(dsn=args.dsn, file_store_base_dir=str(directory), schema=schema)
    return await store.open()


async def drop_schema(store: ExtendedStore, dsn: str) -> None:
    import psycopg

    schema = getattr(store._records.driver.dialect, "schema", None)
    if schema and schema.startswith("bench_queries_"):
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(args, Path(tmp))
        try:
            started = time.perf_counter()
            await fill(store, args.agents, args.messages, args.tool_calls, args.seed)
            print(
                f"{store!r}: {args.agents} agents x {args.messages} messages x {args.tool_calls} tool calls"
            )
            print(f"filled in {time.perf_counter() - started:.1f} s\n")
            print(f"{'query':38} {'median ms':>10} {'p95 ms':>8} {'rows':>6}")
            for name, call in (await queries(store)).items():
                median, p95, rows = await timed(call, args.repeat)
                print(f"{name:38} {median:10.3f} {p95:8.3f} {rows:6d}")
        finally:
            await store.close()
            if args.dsn:
                await drop_schema(store, args.dsn)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queries_scale", description=__doc__)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--messages", type=int, default=50, help="messages per agent")
    parser.add_argument("--tool-calls", type=int, default=10, help="tool-call records per agent")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs per query")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dsn", help="run on Postgres instead of SQLite")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
