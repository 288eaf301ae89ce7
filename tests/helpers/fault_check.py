"""Shared by the fault-injection tests: writer processes, fresh stores, and the acknowledged-write check.

``verify`` is the heart of the suite: given every line the writers acknowledged, it checks each one
against a store opened afresh, then checks the store's invariants.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from helpers.fault_writer import Ack, StoreSpec, prefix_digests

from kodestore import Bookmark, Timeline
from kodestore.config import Durability
from kodestore.extended import ExtendedStore

REPO = Path(__file__).resolve().parents[2]
WRITER = REPO / "tests" / "helpers" / "fault_writer.py"
CONTROL_KINDS = frozenset({"opening", "ready", "locked", "done"})


def new_spec(backend: str, directory: Path, durability: Durability = "os") -> StoreSpec:
    """A store nobody used yet: a new SQLite file, or a new schema on the test server."""
    files = str(directory / "files")
    if backend == "sqlite":
        return StoreSpec("sqlite", str(directory / "db" / "agents.db"), files, durability=durability)
    from conftest import TEST_DSN, require_postgres

    require_postgres()
    return StoreSpec("postgres", TEST_DSN, files, f"t_fault_{uuid.uuid4().hex[:12]}", durability)


async def drop_spec(spec: StoreSpec) -> None:
    """Drop a Postgres test schema (SQLite files go with ``tmp_path``)."""
    if spec.backend != "postgres":
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(spec.target, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{spec.schema}" CASCADE')


class WriterRun:
    """A ``fault_writer.py`` process whose acknowledgements are collected as they are printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.entries: list[Ack] = []
        self.stderr = b""
        self._kinds: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._reader = asyncio.ensure_future(self._read())
        self._errors = asyncio.ensure_future(self._read_stderr())

    @classmethod
    async def start(cls, spec: StoreSpec, agents: Iterable[str], *options: str) -> WriterRun:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WRITER),
            *spec.arguments(agents),
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            if not line.endswith(b"\n"):
                break  # a line cut by the kill was never acknowledged
            entry = orjson.loads(line)
            self.entries.append(entry)
            self._kinds[entry["k"]].set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = await self.proc.stderr.read()

    @property
    def acks(self) -> list[Ack]:
        return [entry for entry in self.entries if entry["k"] not in CONTROL_KINDS]

    def saw(self, kind: str) -> bool:
        return self._kinds[kind].is_set()

    async def wait_for(self, kind: str, timeout: float = 30.0) -> None:
        """Until the writer printed a line of ``kind``; fails if it exits first."""
        seen = asyncio.ensure_future(self._kinds[kind].wait())
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({seen, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            seen.cancel()
            exited.cancel()
        assert self.saw(kind), (
            f"writer printed no {kind!r} line: rc={self.proc.returncode} {self.error_text()}"
        )

    async def kill(self) -> None:
        """SIGKILL (if still running), then collect everything it printed before dying."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await asyncio.gather(self._reader, self._errors)

    async def finish(self, timeout: float = 60.0) -> int:
        """Wait for a normal exit; returns the exit code."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"writer did not finish in {timeout} s: {self.error_text()}") from None
        await asyncio.gather(self._reader, self._errors)
        return self.proc.returncode or 0

    def error_text(self) -> str:
        return self.stderr.decode(errors="replace")[-3000:]


@dataclass
class Verified:
    """What one ``verify`` looked at."""

    acks_checked: int = 0
    torn_tails_repaired: int = 0


async def verify(store: ExtendedStore, acks: Iterable[Ack], *, ascending: bool = True) -> Verified:
    """Every acknowledged write is in ``store``, and the store's invariants hold.

    Messages and tool calls: the stored list holds at least the acknowledged count, and its prefix of
    that length has the acknowledged digest (content, not just length). Events: every acknowledged seq
    is readable, no seq appears twice, and with one writer at a time seqs ascend. Info: its message
    count equals the stored messages and its bookmark is at least the acknowledged one. Todos: at
    least the acknowledged version. Snapshots: loadable with the acknowledged messages. History
    windows: present. Then ``check_consistency`` must be clean; the one issue
    allowed is a torn last line (a writer killed inside its single ``write``), which the next append
    moves aside: one repair append is made and the check must then be clean.
    """
    by_agent: dict[str, list[Ack]] = defaultdict(list)
    for ack in acks:
        by_agent[ack["a"]].append(ack)
    result = Verified()
    for agent, entries in sorted(by_agent.items()):
        stored = await StoredAgent.load(store, agent, ascending)
        for ack in entries:
            stored.check(agent, ack)
        result.acks_checked += len(entries)
    report = await store.check_consistency()
    torn = {issue.split(":")[0] for issue in report.issues if issue.endswith("torn line")}
    for agent in sorted(torn):
        events = [e.bookmark.seq async for e in store.read_events(agent)]
        seq = max(events, default=0) + 1
        await store.append_event(
            agent, Timeline(seq, Bookmark(seq, 0), {"channel": "monitor", "type": "repair"})
        )
        result.torn_tails_repaired += 1
    if torn:
        report = await store.check_consistency()
    assert report.consistent, f"store inconsistent after the fault: {report.issues}"
    return result


@dataclass
class StoredAgent:
    """What the store holds for one agent, in the form acknowledgements are checked against."""

    message_digests: list[str]  # [n] = digest of the first n messages
    record_digests: list[str]
    seqs: set[int]
    message_count: int
    bookmark: int | None
    todos_version: int | None
    windows: set[str]
    snapshots: dict[str, tuple[int, str]]  # id -> (messages, digest)

    @classmethod
    async def load(cls, store: ExtendedStore, agent: str, ascending: bool) -> StoredAgent:
        """Read the agent back, checking its own invariants on the way."""
        info = await store.load_info(agent)
        assert info is not None, f"{agent}: acknowledged writes but no info"
        messages = [m.to_dict() for m in await store.load_messages(agent)]
        assert info.message_count == len(messages), (
            f"{agent}: info says {info.message_count} messages, {len(messages)} stored"
        )
        seqs = [event.bookmark.seq async for event in store.read_events(agent)]
        assert len(set(seqs)) == len(seqs), f"{agent}: duplicate event seqs {_duplicates(seqs)}"
        assert not ascending or seqs == sorted(seqs), f"{agent}: events out of order"
        todos = await store.load_todos(agent)
        return cls(
            message_digests=prefix_digests(messages),
            record_digests=prefix_digests([r.to_dict() for r in await store.load_tool_call_records(agent)]),
            seqs=set(seqs),
            message_count=info.message_count,
            bookmark=info.last_bookmark.seq if info.last_bookmark else None,
            todos_version=todos.version if todos else None,
            windows={window.id for window in await store.load_history_windows(agent)},
            snapshots={
                snapshot.id: (
                    len(snapshot.messages),
                    prefix_digests([m.to_dict() for m in snapshot.messages])[-1],
                )
                for snapshot in await store.list_snapshots(agent)
            },
        )

    def check(self, agent: str, ack: Ack) -> None:
        """One acknowledged write is here (or superseded by a later one)."""
        kind = ack["k"]
        if kind in ("messages", "tool_calls"):
            digests = self.message_digests if kind == "messages" else self.record_digests
            assert ack["n"] < len(digests), (
                f"{agent}: acknowledged {ack['n']} {kind}, {len(digests) - 1} stored"
            )
            assert digests[ack["n"]] == ack["h"], (
                f"{agent}: the first {ack['n']} {kind} differ from those saved"
            )
        elif kind == "event":
            assert ack["seq"] in self.seqs, f"{agent}: acknowledged event seq {ack['seq']} is missing"
        elif kind == "info":
            assert _at_least(self.message_count, ack["mc"]), f"{agent}: {self.message_count} messages < {ack}"
            assert _at_least(self.bookmark, ack["bm"]), f"{agent}: info bookmark {self.bookmark} < {ack}"
        elif kind == "todos":
            assert _at_least(self.todos_version, ack["v"]), f"{agent}: todos {self.todos_version} < {ack}"
        elif kind == "window":
            assert ack["id"] in self.windows, f"{agent}: acknowledged history window {ack['id']} missing"
        elif kind == "snapshot":
            found = self.snapshots.get(ack["id"])
            assert found == (ack["n"], ack["h"]), f"{agent}: snapshot {ack} stored as {found}"
        else:
            raise AssertionError(f"unknown acknowledgement {ack}")


def _at_least(stored: int | None, acknowledged: int | None) -> bool:
    """A value saved later may only be newer (larger) than the acknowledged one."""
    return acknowledged is None or (stored is not None and stored >= acknowledged)


def _duplicates(seqs: list[int]) -> list[int]:
    seen: set[int] = set()
    return sorted({seq for seq in seqs if seq in seen or seen.add(seq)})  # type: ignore[func-returns-value]


async def verify_spec(spec: StoreSpec, acks: Iterable[Ack], *, ascending: bool = True) -> Verified:
    """``verify`` on the store reopened in this process, as after a restart."""
    store = await spec.open()
    try:
        return await verify(store, acks, ascending=ascending)
    finally:
        await store.close()


def json_totals(path: Path, totals: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(totals, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
