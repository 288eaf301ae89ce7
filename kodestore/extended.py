"""``QueryableStore`` (analyst queries) and ``ExtendedStore`` (operations) over a SQL record backend."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Unpack

from kodestore.backend import RuntimeFiles
from kodestore.db.queries import (
    MessageFilters,
    MessageQuery,
    SessionFilters,
    SessionQuery,
    ToolCallFilters,
    ToolCallQuery,
    cursor_of,
)
from kodestore.db.records import SqlRecords
from kodestore.errors import AgentNotFound
from kodestore.facade import Store, operation
from kodestore.hitl import HumanLoopMixin
from kodestore.locks import AgentLocker, Release
from kodestore.models import (
    AgentInfo,
    AgentStats,
    ConsistencyCheckResult,
    DatabaseHealth,
    FileSystemHealth,
    Message,
    MessageRecord,
    SessionInfo,
    StorageStats,
    StoreHealthStatus,
    StoreMetrics,
    ToolCallRecord,
)
from kodestore.validation import check_limit, ms_to_iso, now_ms, validate_agent_id

HEALTH_TIMEOUT_S = 5.0
MAX_FORKS = 1000


class QueryableStore(Store):
    """A store whose records live in SQL, so analysts can query across agents.

    Every query returns rows in a total order (ties broken by agent id, then seq or tool-call id), so
    paging returns each row exactly once: by ``limit``/``offset``, or, in constant time per page, by
    ``after=`` the last row of the previous page (or ``cursor_of(row)``, an opaque string)."""

    _records: SqlRecords

    cursor_of = staticmethod(cursor_of)

    def __init__(self, records: SqlRecords, files: RuntimeFiles) -> None:
        super().__init__(records, files)

    @operation("queries")
    async def query_sessions(self, /, **filters: Unpack[SessionFilters]) -> list[SessionInfo]:
        """Sessions (agents with info), newest first unless ``sort_by`` / ``sort_order`` say otherwise.

        ``user_id`` matches ``metadata["userId"]`` or ``metadata["user"]``; ``metadata={...}`` keeps
        sessions whose metadata has every given key with an equal value. Ties in the sort column are
        broken by agent id, in the same direction."""
        return await self._records.query_sessions(SessionQuery.build(**filters))

    @operation("queries")
    async def query_messages(self, /, **filters: Unpack[MessageFilters]) -> list[MessageRecord]:
        """Messages across agents, newest first (``created_at``, then agent id, then seq, descending).

        ``content_type`` keeps messages with a content block of that ``type``; a message's
        ``created_at`` is when it was first saved."""
        return await self._records.query_messages(MessageQuery.build(**filters))

    @operation("queries")
    async def query_tool_calls(self, /, **filters: Unpack[ToolCallFilters]) -> list[ToolCallRecord]:
        """Tool-call records across agents with ``agent_id`` set, newest first by the record's own
        ``created_at`` (then agent id, then id, descending). ``has_approval=True`` keeps records whose
        ``approval.required`` is true."""
        return await self._records.query_tool_calls(ToolCallQuery.build(**filters))

    @operation("queries")
    async def aggregate_stats(self, agent_id: str | None = None) -> AgentStats:
        """Totals for one agent, or across all agents when ``agent_id`` is None, in one statement."""
        return await self._records.aggregate_stats(agent_id)


class ExtendedStore(HumanLoopMixin, QueryableStore):
    """Health, consistency, metrics, agent locks and forks; suspended states and feedback."""

    def __init__(self, records: SqlRecords, files: RuntimeFiles, locker: AgentLocker) -> None:
        super().__init__(records, files)
        self._locker = locker

    def _describe(self) -> str:
        return self._records.driver.describe()

    async def close(self) -> None:
        if self._state == "open":
            await self._locker.close()
        await super().close()

    # ---- health ----------------------------------------------------------------------------------

    async def health_check(self) -> StoreHealthStatus:
        """Never raises for an unreachable database: reports it, within a bounded time."""
        self._ensure_open()
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._records.driver.ping(), HEALTH_TIMEOUT_S)
            database = DatabaseHealth(True, round((time.perf_counter() - started) * 1000, 3))
        except Exception as exc:  # any failure is the report, not an error of the check
            database = DatabaseHealth(False, None, f"{type(exc).__name__}: {exc}".rstrip(": "))
        problem = await self._files.check_writable()
        files = FileSystemHealth(problem is None, problem)
        return StoreHealthStatus(database.connected and files.writable, database, files, now_ms())

    async def check_consistency(self, agent_id: str | None = None) -> ConsistencyCheckResult:
        """Compare the database with the files: for one agent, or the whole store when ``None``."""
        self._ensure_open()
        if agent_id is not None:
            validate_agent_id(agent_id)
            issues = await self._agent_issues(agent_id)
        else:
            issues = []
            with_info = set(await self._records.list_agents(None))
            for agent in sorted(with_info | set(await self._files.agent_ids())):
                issues.extend(await self._agent_issues(agent))
        return ConsistencyCheckResult(not issues, issues, now_ms())

    async def _agent_issues(self, agent_id: str) -> list[str]:
        issues = []
        counts = await self._records.stored_message_count(agent_id)
        has_files = agent_id in await self._files.agent_ids()
        if counts is None:
            if has_files:
                issues.append(f"{agent_id}: files without an agent (no info in the database)")
            return issues
        info_count, rows = counts
        if info_count != rows:
            issues.append(f"{agent_id}: info says {info_count} messages, database holds {rows}")
        report = await self._files.inspect_events(agent_id)
        if report.torn_tail:
            issues.append(f"{agent_id}: event log ends with a torn line")
        for line in report.corrupt_lines:
            issues.append(f"{agent_id}: event log line {line} is corrupt")
        if report.duplicate_seqs:
            shown = ", ".join(map(str, report.duplicate_seqs[:10]))
            issues.append(f"{agent_id}: event log repeats seq {shown}")
        info = await self._records.load_info(agent_id)
        bookmark = (info or {}).get("lastBookmark")
        bookmark_seq = bookmark.get("seq") if isinstance(bookmark, dict) else None
        if isinstance(bookmark_seq, int) and (report.max_seq is None or bookmark_seq > report.max_seq):
            issues.append(
                f"{agent_id}: info bookmark seq {bookmark_seq} is beyond the event log"
                f" (last seq {report.max_seq})"
            )
        return issues

    async def get_metrics(self) -> StoreMetrics:
        self._ensure_open()
        agents, messages, tool_calls = await self._records.totals()
        storage = StorageStats(
            total_agents=agents,
            total_messages=messages,
            total_tool_calls=tool_calls,
            db_size_bytes=await self._records.driver.size_bytes(),
            file_store_bytes=await self._files.size_bytes(),
        )
        return StoreMetrics(self.metrics.operations(), self.metrics.latency(), storage, now_ms())

    # ---- locks -----------------------------------------------------------------------------------

    async def acquire_agent_lock(self, agent_id: str, timeout_ms: int = 30_000) -> Release:
        """Exclusive across processes (and hosts, on Postgres); returns the async release function."""
        self._ensure_open()
        validate_agent_id(agent_id)
        check_limit(timeout_ms, "timeout_ms")
        return await self._locker.acquire(agent_id, timeout_ms)

    @asynccontextmanager
    async def agent_lock(self, agent_id: str, timeout_ms: int = 30_000) -> AsyncIterator[None]:
        release = await self.acquire_agent_lock(agent_id, timeout_ms)
        try:
            yield
        finally:
            await release()

    # ---- forks -----------------------------------------------------------------------------------

    @operation("saves")
    async def batch_fork(self, agent_id: str, count: int) -> list[str]:
        """``count`` copies of the agent (info, messages, tool calls, todos), each with its lineage."""
        check_limit(count, "count")
        if count > MAX_FORKS:
            raise ValueError(f"count must be at most {MAX_FORKS}, got {count}")
        return await self._fork(agent_id, count, None)

    @operation("saves")
    async def fork(self, agent_id: str, up_to_message: int | None = None) -> str:
        """One copy; ``up_to_message=n`` keeps only the first ``n`` messages (seq < n)."""
        if up_to_message is not None:
            check_limit(up_to_message, "up_to_message")
        return (await self._fork(agent_id, 1, up_to_message))[0]

    async def _fork(self, agent_id: str, count: int, up_to_message: int | None) -> list[str]:
        source_data = await self._records.load_info(agent_id)
        if source_data is None:
            raise AgentNotFound(f"cannot fork {agent_id!r}: it has no info")
        source = AgentInfo.from_dict(source_data)
        messages = [Message.from_dict(m) for m in await self._records.load_messages(agent_id)]
        if up_to_message is not None:
            if up_to_message > len(messages):
                raise ValueError(f"up_to_message {up_to_message} exceeds the {len(messages)} messages")
            messages = messages[:up_to_message]
        records = [ToolCallRecord.from_dict(r) for r in await self._records.load_tool_calls(agent_id)]
        todos = await self._files.load_todos(agent_id)
        created = []
        for _ in range(count):
            new_id = f"agt-{uuid.uuid4().hex}"
            info = AgentInfo.from_dict(source.to_dict())
            info.agent_id = new_id
            info.lineage = [*source.lineage, agent_id]
            info.created_at = ms_to_iso(now_ms())
            info.message_count = len(messages)
            await self._records.save_turn(new_id, (messages, 0), (records, 0), info, now_ms())
            if todos is not None:
                await self._files.save_todos(new_id, todos)
            created.append(new_id)
        return created

    async def get_lineage(self, agent_id: str) -> dict[str, list[str]]:
        """``ancestors`` oldest first (from the info's lineage) and every ``descendants`` id."""
        self._ensure_open()
        validate_agent_id(agent_id)
        info = await self._records.load_info(agent_id)
        ancestors = list(info.get("lineage", [])) if info else []
        return {"ancestors": ancestors, "descendants": await self._records.descendants(agent_id)}
