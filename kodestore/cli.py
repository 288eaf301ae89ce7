"""The ``kodestore`` command: each subcommand opens the store, calls one library function, prints.

Output is a readable table by default and JSON lines with ``--json``. Bad input ends with a one-line
error on stderr and exit status 2; a failed check exits 1; no tracebacks for user errors.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from contextlib import aclosing
from datetime import datetime
from typing import Any, NoReturn, TextIO

import orjson

from kodestore import output
from kodestore.config import resolve_options
from kodestore.db.queries import CursorRow, cursor_of
from kodestore.demo import simulate
from kodestore.errors import KodeStoreError
from kodestore.extended import ExtendedStore
from kodestore.facade import Store
from kodestore.factory import build_store
from kodestore.models import ToolCallState

Command = Callable[[argparse.Namespace, TextIO], Coroutine[Any, Any, int]]
_COMMANDS: dict[str, Command] = {}


_FLAG_OPTIONS = {
    "type": "type",
    "db": "db_path",
    "store_dir": "file_store_base_dir",
    "dsn": "dsn",
    "schema": "schema",
}


def store_options(args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
    """Factory options from the store flags given (``--db`` ...; ``--to-db`` ... with ``prefix="to_"``)."""
    values = {option: getattr(args, prefix + flag, None) for flag, option in _FLAG_OPTIONS.items()}
    return {option: value for option, value in values.items() if value}


async def open_store(args: argparse.Namespace) -> Store:
    return await build_store(resolve_options(store_options(args))).open()


async def open_extended(args: argparse.Namespace) -> ExtendedStore:
    store = await open_store(args)
    if not isinstance(store, ExtendedStore):
        await store.close()
        raise KodeStoreError(f"this command needs a database-backed store, not {type(store).__name__}")
    return store


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


# ---- commands ------------------------------------------------------------------------------------


@command("init")
async def _init(args: argparse.Namespace, out: TextIO) -> int:
    from kodestore.schema_status import schema_status

    if args.check:
        status = await schema_status(resolve_options(store_options(args)))
        output.emit(
            out,
            [{"current": status.current, "applied": list(status.applied), "pending": list(status.pending)}],
            args.json,
        )
        return 0 if status.current else 1
    store = await open_store(args)
    await store.close()
    output.emit(out, [{"initialised": repr(store)}], args.json)
    return 0


@command("demo")
async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    store = await open_extended(args)
    async with store:
        ids = await simulate(store, agents=args.agents, turns=args.turns)
        out.write(f"simulated {len(ids)} agents x {args.turns} turns into {store!r}\n\n")
        out.write("sessions (newest first):\n")
        output.emit(
            out,
            [s.to_dict() for s in await store.query_sessions(limit=10)],
            args.json,
            columns=["agentId", "templateId", "messageCount", "createdAt"],
        )
        out.write("\nfailed tool calls:\n")
        failed = await store.query_tool_calls(state="FAILED", limit=5)
        output.emit(
            out, [r.to_dict() for r in failed], args.json, columns=["agentId", "id", "name", "state", "error"]
        )
        out.write("\nstats:\n")
        output.emit(out, [(await store.aggregate_stats()).to_dict()], args.json)
        health = await store.health_check()
        out.write(f"\nhealthy: {health.healthy}\n")
    return 0


def _timestamp(text: str | None, flag: str) -> datetime | int | None:
    """Epoch milliseconds, or an ISO-8601 time (without a zone it is UTC)."""
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{flag} wants epoch milliseconds or an ISO-8601 time, got {text!r}") from None


def _metadata(pairs: list[str] | None) -> dict[str, Any] | None:
    """``KEY=VALUE`` pairs (the value a string) or ``KEY:=JSON`` (a number, bool, object...)."""
    if not pairs:
        return None
    wanted: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key in ("", ":"):
            raise ValueError(f"--metadata wants KEY=VALUE or KEY:=JSON, got {pair!r}")
        if not key.endswith(":"):
            wanted[key] = value
            continue
        try:
            wanted[key[:-1]] = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ValueError(f"--metadata {key[:-1]}:= wants a JSON value, got {value!r}") from None
    return wanted


def _page_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The options every listing shares: agent, time range and page."""
    return {
        "agent_id": args.agent,
        "created_after": _timestamp(args.after, "--after"),
        "created_before": _timestamp(args.before, "--before"),
        "limit": args.limit,
        "offset": args.offset,
        "after": args.cursor,
    }


def _emit_page(out: TextIO, rows: Sequence[CursorRow], args: argparse.Namespace, columns: list[str]) -> None:
    """Rows as a table, then the cursor of the next page when this one is full; or JSON lines, each
    with its row's ``cursor``."""
    if args.json:
        output.emit(out, [{**row.to_dict(), "cursor": cursor_of(row)} for row in rows], True)
        return
    output.emit(out, [row.to_dict() for row in rows], False, columns=columns)
    if rows and len(rows) == args.limit:
        out.write(f"next page: --cursor {cursor_of(rows[-1])}\n")


@command("sessions")
async def _sessions(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_extended(args) as store:
        rows = await store.query_sessions(
            **_page_filters(args),
            template_id=args.template,
            user_id=args.user,
            metadata=_metadata(args.metadata),
            sort_by=args.sort_by,
            sort_order=args.order,
        )
    _emit_page(out, rows, args, ["agentId", "templateId", "messageCount", "createdAt", "breakpoint"])
    return 0


@command("messages")
async def _messages(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_extended(args) as store:
        rows = await store.query_messages(
            **_page_filters(args), role=args.role, content_type=args.content_type
        )
    _emit_page(out, rows, args, ["agentId", "seq", "role", "createdAt", "content"])
    return 0


@command("tool-calls")
async def _tool_calls(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_extended(args) as store:
        rows = await store.query_tool_calls(
            **_page_filters(args),
            tool_name=args.tool,
            state=args.state,
            is_error=args.is_error,
            has_approval=args.has_approval,
        )
    _emit_page(out, rows, args, ["agentId", "id", "name", "state", "isError", "createdAt"])
    return 0


@command("stats")
async def _stats(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_extended(args) as store:
        stats = await store.aggregate_stats(args.agent)
    if args.json:
        output.emit(out, [stats.to_dict()], True)
        return 0
    totals = {k: v for k, v in stats.to_dict().items() if not isinstance(v, dict)}
    output.emit(out, [{"stat": k, "value": v} for k, v in totals.items()], False)
    for title, counts in (("tool", stats.tool_calls_by_name), ("state", stats.tool_calls_by_state)):
        out.write("\n")
        rows = [{title: k, "calls": n} for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        output.emit(out, rows, False, columns=[title, "calls"])
    return 0


@command("health")
async def _health(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_extended(args) as store:
        status = await store.health_check()
    output.emit(out, [output.flatten(status.to_dict())], args.json)
    return 0 if status.healthy else 1


@command("check")
async def _check(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_extended(args) as store:
        result = await store.check_consistency(args.agent)
    if args.json:
        output.emit(out, [result.to_dict()], True)
    else:
        out.write("consistent\n" if result.consistent else "".join(f"{i}\n" for i in result.issues))
    return 0 if result.consistent else 1


@command("events")
async def _events(args: argparse.Namespace, out: TextIO) -> int:
    from kodestore.follow import follow_events

    async with await open_store(args) as store:
        events = follow_events(store, args.agent_id, args.since, args.channel, args.follow)
        async with aclosing(events):
            async for timeline in events:
                output.emit(out, [timeline.to_dict()], True)
                out.flush()
    return 0


# ---- parsing -------------------------------------------------------------------------------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}")
        return value

    return parse


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError("expected true or false")


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments end like every other user error: one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from kodestore.cli_ops import add_ops_parsers

    common = OneLineErrorParser(add_help=False)
    where = common.add_argument_group("store (default: from KODE_* environment variables)")
    where.add_argument("--type", choices=["sqlite", "postgres", "memory", "json"], help="store type")
    where.add_argument("--db", help="SQLite database path (KODE_SQLITE_PATH)")
    where.add_argument("--store-dir", help="directory of the JSONL files (KODE_STORE_PATH)")
    where.add_argument("--dsn", help="PostgreSQL DSN (KODE_POSTGRES_DSN / DATABASE_URL)")
    where.add_argument("--schema", help="PostgreSQL schema (default public)")
    common.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    page = OneLineErrorParser(add_help=False)
    page.add_argument("--agent", help="only this agent id")
    page.add_argument("--after", help="created at or after (epoch ms or ISO-8601, UTC if no zone)")
    page.add_argument("--before", help="created before (epoch ms or ISO-8601)")
    page.add_argument("--limit", type=int, default=100, help="rows per page (default 100)")
    page.add_argument("--offset", type=int, default=0, help="rows to skip")
    page.add_argument("--cursor", help="start after the row of this cursor (printed with each page)")

    parser = OneLineErrorParser(prog="kodestore", description="Inspect and operate a kodestore store.")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser
    )

    init = sub.add_parser(
        "init",
        parents=[common],
        help="create or upgrade the schema",
        description="Create the database schema, or report its status with --check.",
    )
    init.add_argument("--check", action="store_true", help="only report whether the schema is current")
    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="simulate agent sessions and query them",
        description="Simulate agent sessions into the store, then print queries and stats.",
    )
    demo.add_argument("--agents", type=int_at_least(0), default=5, help="agents to simulate (default 5)")
    demo.add_argument("--turns", type=int_at_least(0), default=10, help="turns per agent (default 10)")

    sessions = sub.add_parser(
        "sessions",
        parents=[common, page],
        help="list sessions",
        description="List sessions (agents), newest first.",
    )
    sessions.add_argument("--template", help="template id")
    sessions.add_argument("--user", help="metadata userId / user")
    sessions.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="metadata[KEY] equals the string VALUE; KEY:=JSON for a number, bool or object (repeatable)",
    )
    sessions.add_argument(
        "--sort-by", default="created_at", choices=["created_at", "updated_at", "message_count"]
    )
    sessions.add_argument("--order", default="desc", choices=["desc", "asc"])
    messages = sub.add_parser(
        "messages",
        parents=[common, page],
        help="list messages",
        description="List messages across agents, newest first.",
    )
    messages.add_argument("--role", help="user, assistant, system")
    messages.add_argument("--content-type", help="a content block type: text, tool_use, tool_result, image")
    calls = sub.add_parser(
        "tool-calls",
        parents=[common, page],
        help="list tool calls",
        description="List tool-call records across agents, newest first.",
    )
    calls.add_argument("--tool", help="tool name")
    calls.add_argument("--state", help=", ".join(ToolCallState))
    calls.add_argument("--is-error", type=_bool, help="true or false")
    calls.add_argument("--has-approval", type=_bool, help="true or false")
    stats = sub.add_parser(
        "stats",
        parents=[common],
        help="aggregate statistics",
        description="Totals and counts by tool name and state, for one agent or all.",
    )
    stats.add_argument("--agent", help="only this agent id")
    sub.add_parser(
        "health",
        parents=[common],
        help="check database and files",
        description="Report database reachability and whether the files are writable; exit 1 if not.",
    )
    check = sub.add_parser(
        "check",
        parents=[common],
        help="check consistency (exit 1 if inconsistent)",
        description="Compare the database with the files; exit 1 when they disagree.",
    )
    check.add_argument("--agent", help="only this agent id (default: the whole store)")
    events = sub.add_parser(
        "events",
        parents=[common],
        help="print or follow an agent's events",
        description="Print an agent's events as JSON lines; --follow keeps tailing.",
    )
    events.add_argument("agent_id")
    events.add_argument("--since", type=int, help="only events with seq greater than this")
    events.add_argument("--channel", choices=["progress", "control", "monitor"])
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    add_ops_parsers(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 check failed, 2 bad input or error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = out or sys.stdout
    try:
        return asyncio.run(_COMMANDS[args.command](args, stream))
    except (KodeStoreError, ValueError, OSError) as exc:
        print(f"kodestore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
