"""Analyst queries as pure functions: validated filters in, one parameterised ``Stmt`` out.

Nothing a caller passes is ever spliced into SQL: values are parameters, and the only identifiers
that vary (sort column and direction) come from the fixed maps below. Every query orders by a key
that ends in a unique column, so the order is total: limit/offset pages and keyset pages (``after=``)
return each row exactly once, however many timestamps tie.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any, TypedDict

from kodestore.db.base import Dialect, Row, Stmt
from kodestore.jsonutil import dumps, loads
from kodestore.models import AgentStats, MessageRecord, SessionInfo, ToolCallRecord, ToolCallState
from kodestore.validation import (
    check_choice,
    check_dict,
    check_limit,
    check_optional_bool,
    check_optional_str,
    iso_to_epoch_ms,
    to_epoch_ms,
    validate_agent_id,
)

SORT_COLUMNS = {
    "created_at": "created_at_ms",
    "updated_at": "updated_at_ms",
    "message_count": "message_count",
}
SORT_ORDERS = {"desc": "DESC", "asc": "ASC"}
MESSAGE_ORDER = ("created_at", "agent_id", "seq")
TOOL_CALL_ORDER = ("created_at", "agent_id", "id")
_MAX_INT = 2**63 - 1  # what both databases store in an INTEGER / BIGINT

Timestamp = datetime | int
"""A ``datetime`` (naive means UTC) or epoch milliseconds."""


class SessionFilters(TypedDict, total=False):
    """Keyword arguments of ``query_sessions``."""

    agent_id: str | None
    template_id: str | None
    user_id: str | None
    metadata: dict[str, Any] | None
    created_after: Timestamp | None
    created_before: Timestamp | None
    limit: int
    offset: int
    after: SessionInfo | str | None
    sort_by: str  # a key of SORT_COLUMNS
    sort_order: str  # "desc" or "asc"


class MessageFilters(TypedDict, total=False):
    """Keyword arguments of ``query_messages``."""

    agent_id: str | None
    role: str | None
    content_type: str | None
    created_after: Timestamp | None
    created_before: Timestamp | None
    limit: int
    offset: int
    after: MessageRecord | str | None


class ToolCallFilters(TypedDict, total=False):
    """Keyword arguments of ``query_tool_calls``."""

    agent_id: str | None
    tool_name: str | None
    state: ToolCallState | str | None
    is_error: bool | None
    has_approval: bool | None
    created_after: Timestamp | None
    created_before: Timestamp | None
    limit: int
    offset: int
    after: ToolCallRecord | str | None


# ---- argument checks -----------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _int64(value: int, name: str) -> int:
    if not -_MAX_INT <= value <= _MAX_INT:
        raise ValueError(f"{name} is out of range: {value}")
    return value


def _count(value: object, name: str) -> int:
    return _int64(check_limit(value, name), name)


def _time_bound(value: object, name: str) -> int | None:
    """Epoch ms such that ``created_at >= bound`` (or ``<``) means the same as against ``value``.

    Stored times are whole milliseconds, so a datetime between two of them rounds up, in exact integer
    arithmetic (a float timestamp would lose the last millisecond now and then)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return _int64(-((_EPOCH - aware) // _MS), name)
    ms = to_epoch_ms(value, name)
    return None if ms is None else _int64(ms, name)


def _optional_agent(agent_id: object) -> str | None:
    return None if agent_id is None else validate_agent_id(agent_id)


def _state(value: object) -> str | None:
    """A ``ToolCallState`` or its name; anything else would silently match nothing."""
    return None if value is None else check_choice(value, "state", ToolCallState)


# ---- keyset cursors ------------------------------------------------------------------------------
#
# A cursor is the sort key of one row: ``base64url(JSON [kind, *values]) . base64url(tag)``. The tag
# is a keyed checksum, not a secret: it turns an edited or truncated cursor into a clear error instead
# of a silently different page. Safety never depends on it; cursor values are bound as parameters.

_CURSOR_KEY = b"kodestore-cursor-v1"
# kind -> the types of its key values. A session key holds every sortable column, in SORT_COLUMNS
# order, then agent_id, so one cursor serves any ``sort_by``.
_KEY_TYPES: dict[str, tuple[type, ...]] = {
    "session": (int, int, int, str),  # created_at_ms, updated_at_ms, message_count, agent_id
    "message": (int, str, int),  # created_at, agent_id, seq
    "tool_call": (int, str, str),  # created_at, agent_id, id
}
_ROW_TYPES: dict[str, type[SessionInfo] | type[MessageRecord] | type[ToolCallRecord]] = {
    "session": SessionInfo,
    "message": MessageRecord,
    "tool_call": ToolCallRecord,
}
CursorRow = SessionInfo | MessageRecord | ToolCallRecord


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(body: bytes) -> bytes:
    return blake2b(body, key=_CURSOR_KEY, digest_size=8).digest()


def _row_key(row: CursorRow, name: str) -> tuple[str, list[Any]]:
    """The kind and sort-key values of a result row; ``name`` is the argument blamed for a bad row."""
    if isinstance(row, SessionInfo):
        created = iso_to_epoch_ms(row.created_at, f"{name}.created_at")  # as the agents row stores it
        kind, values = "session", [created, row.updated_at, row.message_count, row.agent_id]
    elif isinstance(row, MessageRecord):
        kind, values = "message", [row.created_at, row.agent_id, row.seq]
    else:
        kind, values = "tool_call", [row.created_at, row.agent_id, row.id]
    if not _well_formed(kind, values):
        raise ValueError(f"{name}: this {type(row).__name__} has no valid sort key {values!r}")
    return kind, values


def _well_formed(kind: str, values: list[Any]) -> bool:
    types = _KEY_TYPES[kind]
    if len(values) != len(types) or any(type(v) is not t for v, t in zip(values, types, strict=True)):
        return False  # ``type() is``: a bool is no int here
    return all(-_MAX_INT <= v <= _MAX_INT for v in values if type(v) is int)


def cursor_of(row: CursorRow) -> str:
    """The opaque cursor of a query result row: pass it as ``after=`` to get the rows that follow.

    ``after=row`` does the same; the cursor is for when the row cannot travel (a URL, a CLI flag)."""
    if not isinstance(row, (SessionInfo, MessageRecord, ToolCallRecord)):
        raise ValueError(f"cursor_of needs a query result row, got {type(row).__name__}")
    kind, values = _row_key(row, "cursor_of")
    body = dumps([kind, *values], "cursor")
    return f"{_b64(body)}.{_b64(_tag(body))}"


def _decode_cursor(token: str, kind: str) -> list[Any]:
    body_text, _, tag_text = token.partition(".")
    try:
        body, tag = _unb64(body_text), _unb64(tag_text)
        payload = loads(body) if hmac.compare_digest(tag, _tag(body)) else None
    except ValueError:  # bad base64 or JSON
        payload = None
    if not isinstance(payload, list) or payload[:1] != [kind] or not _well_formed(kind, payload[1:]):
        raise ValueError(
            f"after: not a {kind} cursor from cursor_of() (edited, truncated or another query's)"
        )
    return payload[1:]


def _after_key(after: object, offset: int, kind: str) -> list[Any] | None:
    """The sort-key values of the row to start after, from a result row or its cursor."""
    if after is None:
        return None
    if offset:
        raise ValueError("after and offset cannot be combined: after already says where the page starts")
    if isinstance(after, str):
        return _decode_cursor(after, kind)
    row_type = _ROW_TYPES[kind]
    if not isinstance(after, row_type):
        raise ValueError(
            f"after must be a {row_type.__name__} or a cursor string, got {type(after).__name__}"
        )
    return _row_key(after, "after")[1]


# ---- the pieces every query shares ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Common to every query: a time range and a page (by offset, or after a row's sort key)."""

    created_after: int | None
    created_before: int | None
    limit: int
    offset: int
    after: tuple[Any, ...] | None

    @classmethod
    def build(cls, created_after: object, created_before: object, limit: object, offset: object) -> Window:
        return cls(
            created_after=_time_bound(created_after, "created_after"),
            created_before=_time_bound(created_before, "created_before"),
            limit=_count(limit, "limit"),
            offset=_count(offset, "offset"),
            after=None,
        )

    def starting_after(self, key: Sequence[Any] | None) -> Window:
        return self if key is None else replace(self, after=tuple(key))


class Where:
    """Accumulates ``AND``-ed conditions and their parameters in order."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, *params: Any) -> None:
        self.conditions.append(condition)
        self.params.extend(params)

    def add_if(self, value: object, condition: str) -> None:
        if value is not None:
            self.add(condition, value)

    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""


def select_page(
    columns: str,
    table: str,
    where: Where,
    created: str,
    order: Sequence[str],
    direction: str,
    window: Window,
) -> Stmt:
    """The query with its time range, keyset condition, total order and page.

    Every order here has one direction for all its columns, so "after this row" is a single row-value
    comparison, which SQLite (>= 3.15) and Postgres both turn into an index range."""
    where.add_if(window.created_after, f"{created} >= ?")
    where.add_if(window.created_before, f"{created} < ?")
    if window.after is not None:
        operator = "<" if direction == "DESC" else ">"
        where.add(f"({', '.join(order)}) {operator} ({', '.join('?' * len(order))})", *window.after)
    order_sql = ", ".join(f"{column} {direction}" for column in order)
    return Stmt(
        f"SELECT {columns} FROM {table}{where.sql()} ORDER BY {order_sql} LIMIT ? OFFSET ?",
        (*where.params, window.limit, window.offset),
        "all",
    )


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
        after: object = None,
        sort_by: object = "created_at",
        sort_order: object = "desc",
    ) -> SessionQuery:
        window = Window.build(created_after, created_before, limit, offset)
        sort = check_choice(sort_by, "sort_by", SORT_COLUMNS)
        key = _after_key(after, window.offset, "session")
        if key is not None:  # a session key holds every sortable column; keep this order's + agent_id
            key = [key[list(SORT_COLUMNS).index(sort)], key[3]]
        return cls(
            agent_id=_optional_agent(agent_id),
            template_id=check_optional_str(template_id, "template_id"),
            user_id=check_optional_str(user_id, "user_id"),
            metadata=check_dict(metadata, "metadata"),
            window=window.starting_after(key),
            sort_by=sort,
            sort_order=check_choice(sort_order, "sort_order", SORT_ORDERS),
        )


def sessions_stmt(dialect: Dialect, q: SessionQuery) -> Stmt:
    where = Where()
    where.add_if(q.agent_id, "agent_id = ?")
    where.add_if(q.template_id, "template_id = ?")
    if q.user_id is not None:
        user_is = dialect.json_key_is
        where.add(
            f"({user_is('metadata', 'userId')} OR {user_is('metadata', 'user')})",
            dumps({"userId": q.user_id}, "user_id").decode(),
            dumps({"user": q.user_id}, "user_id").decode(),
        )
    if q.metadata:
        where.add(dialect.json_contains("metadata"), dumps(q.metadata, "metadata").decode())
    order = (SORT_COLUMNS[q.sort_by], "agent_id")
    columns = "agent_id, info, message_count, updated_at_ms"
    return select_page(columns, "agents", where, "created_at_ms", order, SORT_ORDERS[q.sort_order], q.window)


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
        after: object = None,
    ) -> MessageQuery:
        window = Window.build(created_after, created_before, limit, offset)
        return cls(
            agent_id=_optional_agent(agent_id),
            role=check_optional_str(role, "role"),
            content_type=check_optional_str(content_type, "content_type"),
            window=window.starting_after(_after_key(after, window.offset, "message")),
        )


def messages_stmt(dialect: Dialect, q: MessageQuery) -> Stmt:
    where = Where()
    where.add_if(q.agent_id, "agent_id = ?")
    where.add_if(q.role, "role = ?")
    where.add_if(q.content_type, dialect.content_has_type("content"))
    columns = "agent_id, seq, role, content, metadata, created_at"
    return select_page(columns, "messages", where, "created_at", MESSAGE_ORDER, "DESC", q.window)


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
        after: object = None,
    ) -> ToolCallQuery:
        window = Window.build(created_after, created_before, limit, offset)
        return cls(
            agent_id=_optional_agent(agent_id),
            tool_name=check_optional_str(tool_name, "tool_name"),
            state=_state(state),
            is_error=check_optional_bool(is_error, "is_error"),
            has_approval=check_optional_bool(has_approval, "has_approval"),
            window=window.starting_after(_after_key(after, window.offset, "tool_call")),
        )


def tool_calls_stmt(dialect: Dialect, q: ToolCallQuery) -> Stmt:
    where = Where()
    where.add_if(q.agent_id, "agent_id = ?")
    where.add_if(q.tool_name, "name = ?")
    where.add_if(q.state, "state = ?")
    where.add_if(q.is_error, "is_error = ?")
    where.add_if(q.has_approval, "approval_required = ?")
    return select_page(
        "agent_id, record", "tool_calls", where, "created_at", TOOL_CALL_ORDER, "DESC", q.window
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
        f" (SELECT state, COUNT(*) AS n FROM tool_calls{filter_sql} GROUP BY state) AS by_state),"
        f" (SELECT COUNT(*) FROM feedback{filter_sql}),"
        f" (SELECT AVG(rating) FROM feedback{filter_sql})"
    )
    params = () if agent_id is None else (agent_id,) * 8
    return Stmt(sql, params, "one")


def stats_from_row(row: Row) -> AgentStats:
    sessions, messages, tool_calls, snapshots, by_name, by_state, feedback, mean_rating = row
    return AgentStats(
        total_messages=int(messages),
        total_tool_calls=int(tool_calls),
        total_snapshots=int(snapshots),
        # the true mean: messages over sessions (agents with info), not a mean of per-agent means
        avg_messages_per_session=(int(messages) / int(sessions)) if sessions else 0.0,
        tool_calls_by_name=_counts(by_name),
        tool_calls_by_state=_counts(by_state),
        total_sessions=int(sessions),
        feedback_count=int(feedback),
        mean_rating=None if mean_rating is None else float(mean_rating),  # Postgres: a Decimal
    )


def _counts(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    data = loads(value) if isinstance(value, (str, bytes)) else value
    return {str(k): int(v) for k, v in data.items()}
