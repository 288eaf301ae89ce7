"""Analyst queries as pure functions: validated filters in, one parameterised ``Stmt`` out.

Nothing a caller passes is ever spliced into SQL: values are parameters, and the only identifiers
that vary (sort column and direction) come from the fixed maps below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kodestore.db.base import Dialect, Row, Stmt
from kodestore.jsonutil import dumps, loads
from kodestore.models import AgentStats, MessageRecord, SessionInfo, ToolCallRecord
from kodestore.validation import (
    check_choice,
    check_dict,
    check_limit,
    check_optional_bool,
    check_optional_str,
    to_epoch_ms,
    validate_agent_id,
)

SORT_COLUMNS = {
    "created_at": "created_at_ms",
    "updated_at": "updated_at_ms",
    "message_count": "message_count",
}
SORT_ORDERS = {"desc": "DESC", "asc": "ASC"}


@dataclass(frozen=True, slots=True)
class Window:
    """Common to every query: a time range and a page."""

    created_after: int | None
    created_before: int | None
    limit: int
    offset: int

    @classmethod
    def build(cls, created_after: object, created_before: object, limit: object, offset: object) -> Window:
        return cls(
            created_after=to_epoch_ms(created_after, "created_after"),
            created_before=to_epoch_ms(created_before, "created_before"),
            limit=check_limit(limit, "limit"),
            offset=check_limit(offset, "offset"),
        )


class _Where:
    """Accumulates ``AND``-ed conditions and their parameters in order."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, *params: Any) -> None:
        self.conditions.append(condition)
        self.params.extend(params)

    def add_window(self, column: str, window: Window) -> None:
        if window.created_after is not None:
            self.add(f"{column} >= ?", window.created_after)
        if window.created_before is not None:
            self.add(f"{column} < ?", window.created_before)

    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""


def _optional_agent(agent_id: object) -> str | None:
    return None if agent_id is None else validate_agent_id(agent_id)


# ---- sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionQuery:
    agent_id: str | None
    template_id: str | None
    user_id: str | None
    metadata: dict[str, Any] | None
    window: Window
    sort_by: str
    sort_order: str

    @classmethod
    def build(
        cls,
        *,
        agent_id: object = None,
        template_id: object = None,
        user_id: object = None,
        metadata: object = None,
        created_after: object = None,
        created_before: object = None,
        limit: object = 100,
        offset: object = 0,
        sort_by: object = "created_at",
        sort_order: object = "desc",
    ) -> SessionQuery:
        return cls(
            agent_id=_optional_agent(agent_id),
            template_id=check_optional_str(template_id, "template_id"),
            user_id=check_optional_str(user_id, "user_id"),
            metadata=check_dict(metadata, "metadata"),
            window=Window.build(created_after, created_before, limit, offset),
            sort_by=check_choice(sort_by, "sort_by", SORT_COLUMNS),
            sort_order=check_choice(sort_order, "sort_order", SORT_ORDERS),
        )


def sessions_stmt(dialect: Dialect, q: SessionQuery) -> Stmt:
    where = _Where()
    if q.agent_id is not None:
        where.add("agent_id = ?", q.agent_id)
    if q.template_id is not None:
        where.add("template_id = ?", q.template_id)
    if q.user_id is not None:
        where.add(
            f"({dialect.json_text('metadata', 'userId')} = ? OR {dialect.json_text('metadata', 'user')} = ?)",
            q.user_id,
            q.user_id,
        )
    if q.metadata:
        where.add(dialect.json_contains("metadata"), dumps(q.metadata, "metadata").decode())
    where.add_window("created_at_ms", q.window)
    column, direction = SORT_COLUMNS[q.sort_by], SORT_ORDERS[q.sort_order]
    return Stmt(
        "SELECT agent_id, info, message_count, updated_at_ms FROM agents"
        f"{where.sql()} ORDER BY {column} {direction}, agent_id {direction} LIMIT ? OFFSET ?",
        (*where.params, q.window.limit, q.window.offset),
        "all",
    )


def session_from_row(row: Row) -> SessionInfo:
    agent_id, info_text, message_count, updated_at = row
    info = loads(info_text)
    return SessionInfo(
        agent_id=agent_id,
        template_id=info["templateId"],
        created_at=info["createdAt"],
        message_count=int(message_count),
        last_sfp_index=int(info.get("lastSfpIndex", -1)),
        breakpoint=info.get("breakpoint"),
        metadata=info.get("metadata"),
        updated_at=int(updated_at),
    )


# ---- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageQuery:
    agent_id: str | None
    role: str | None
    content_type: str | None
    window: Window

    @classmethod
    def build(
        cls,
        *,
        agent_id: object = None,
        role: object = None,
        content_type: object = None,
        created_after: object = None,
        created_before: object = None,
        limit: object = 100,
        offset: object = 0,
    ) -> MessageQuery:
        return cls(
            agent_id=_optional_agent(agent_id),
            role=check_optional_str(role, "role"),
            content_type=check_optional_str(content_type, "content_type"),
            window=Window.build(created_after, created_before, limit, offset),
        )


def messages_stmt(dialect: Dialect, q: MessageQuery) -> Stmt:
    where = _Where()
    if q.agent_id is not None:
        where.add("agent_id = ?", q.agent_id)
    if q.role is not None:
        where.add("role = ?", q.role)
    if q.content_type is not None:
        where.add(dialect.content_has_type("content"), q.content_type)
    where.add_window("created_at", q.window)
    return Stmt(
        "SELECT agent_id, seq, role, content, metadata, created_at FROM messages"
        f"{where.sql()} ORDER BY created_at DESC, agent_id DESC, seq DESC LIMIT ? OFFSET ?",
        (*where.params, q.window.limit, q.window.offset),
        "all",
    )


def message_from_row(row: Row) -> MessageRecord:
    agent_id, seq, role, content, metadata, created_at = row
    return MessageRecord(
        agent_id=agent_id,
        seq=int(seq),
        role=role,
        content=loads(content),
        metadata=None if metadata is None else loads(metadata),
        created_at=int(created_at),
    )


# ---- tool calls ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolCallQuery:
    agent_id: str | None
    tool_name: str | None
    state: str | None
    is_error: bool | None
    has_approval: bool | None
    window: Window

    @classmethod
    def build(
        cls,
        *,
        agent_id: object = None,
        tool_name: object = None,
        state: object = None,
        is_error: object = None,
        has_approval: object = None,
        created_after: object = None,
        created_before: object = None,
        limit: object = 100,
        offset: object = 0,
    ) -> ToolCallQuery:
        return cls(
            agent_id=_optional_agent(agent_id),
            tool_name=check_optional_str(tool_name, "tool_name"),
            state=check_optional_str(None if state is None else str(state), "state"),
            is_error=check_optional_bool(is_error, "is_error"),
            has_approval=check_optional_bool(has_approval, "has_approval"),
            window=Window.build(created_after, created_before, limit, offset),
        )


def tool_calls_stmt(dialect: Dialect, q: ToolCallQuery) -> Stmt:
    where = _Where()
    if q.agent_id is not None:
        where.add("agent_id = ?", q.agent_id)
    if q.tool_name is not None:
        where.add("name = ?", q.tool_name)
    if q.state is not None:
        where.add("state = ?", q.state)
    if q.is_error is not None:
        where.add("is_error = ?", q.is_error)
    if q.has_approval is not None:
        where.add("approval_required = ?", q.has_approval)
    where.add_window("created_at", q.window)
    return Stmt(
        "SELECT agent_id, record FROM tool_calls"
        f"{where.sql()} ORDER BY created_at DESC, agent_id DESC, id DESC LIMIT ? OFFSET ?",
        (*where.params, q.window.limit, q.window.offset),
        "all",
    )


def tool_call_from_row(row: Row) -> ToolCallRecord:
    record = ToolCallRecord.from_dict(loads(row[1]))
    record.agent_id = row[0]
    return record


# ---- stats ---------------------------------------------------------------------------------------


def stats_stmt(dialect: Dialect, agent_id: str | None) -> Stmt:
    """Every number of ``AgentStats`` in one statement, one round trip."""
    filter_sql = "" if agent_id is None else " WHERE agent_id = ?"
    count_by = dialect.json_object_agg
    sql = (
        f"SELECT (SELECT COUNT(*) FROM agents{filter_sql}),"
        f" (SELECT COUNT(*) FROM messages{filter_sql}),"
        f" (SELECT COUNT(*) FROM tool_calls{filter_sql}),"
        f" (SELECT COUNT(*) FROM snapshots{filter_sql}),"
        f" (SELECT {count_by('name', 'n')} FROM"
        f" (SELECT name, COUNT(*) AS n FROM tool_calls{filter_sql} GROUP BY name) AS by_name),"
        f" (SELECT {count_by('state', 'n')} FROM"
        f" (SELECT state, COUNT(*) AS n FROM tool_calls{filter_sql} GROUP BY state) AS by_state)"
    )
    params = () if agent_id is None else (agent_id,) * 6
    return Stmt(sql, params, "one")


def stats_from_row(row: Row) -> AgentStats:
    sessions, messages, tool_calls, snapshots, by_name, by_state = row
    return AgentStats(
        total_messages=int(messages),
        total_tool_calls=int(tool_calls),
        total_snapshots=int(snapshots),
        avg_messages_per_session=(int(messages) / int(sessions)) if sessions else 0.0,
        tool_calls_by_name=_counts(by_name),
        tool_calls_by_state=_counts(by_state),
        total_sessions=int(sessions),
    )


def _counts(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    data = loads(value) if isinstance(value, (str, bytes)) else value
    return {str(k): int(v) for k, v in data.items()}
