"""Human in the loop: runs suspended until a human decides (with an expiry), and user feedback.

``HumanLoopMixin`` adds the methods to ``ExtendedStore``; like the rest of the store they are plans
over the SQL driver, one implementation for SQLite, Postgres and memory. Both kinds of row belong to
an agent: saving one for an agent without info raises ``AgentNotFound``, as saving messages does,
and ``store.delete`` or ``ops.prune`` remove them with the agent (``ON DELETE CASCADE``).

An expired suspended state is invisible to every read from the moment it expires, whether or not
``cleanup_expired_states`` has removed it yet: cleanup only reclaims space.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from kodestore.db.base import Plan, Row, Stmt
from kodestore.db.queries import Timestamp, Where, Window, select_page
from kodestore.errors import AgentNotFound
from kodestore.facade import operation
from kodestore.jsonutil import dumps, loads
from kodestore.models import Feedback, JSONDict, SuspendedState
from kodestore.validation import check_dict, check_limit, check_optional_str, now_ms

if TYPE_CHECKING:
    from kodestore.extended import QueryableStore as _Base
else:
    _Base = object

DEFAULT_STATE_TTL = timedelta(days=7)
MIN_RATING, MAX_RATING = 1, 5
_MS = timedelta(milliseconds=1)
_MAX_INT = 2**63 - 1  # what both databases store in a BIGINT


# ---- argument checks -----------------------------------------------------------------------------


def _check_state_id(state_id: object) -> str:
    if not isinstance(state_id, str) or not state_id:
        raise ValueError(f"state_id must be a non-empty string, got {state_id!r}")
    return state_id


def _ttl_ms(ttl: object) -> int:
    """A positive ``timedelta`` in whole milliseconds, rounded up so a tiny ttl still lives."""
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise ValueError(f"ttl must be a positive timedelta, got {ttl!r}")
    return -(-ttl // _MS)


def _rating(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_RATING <= value <= MAX_RATING:
        raise ValueError(f"{name} must be an integer from {MIN_RATING} to {MAX_RATING}, got {value!r}")
    return value


def _optional_json(value: Any, name: str) -> str | None:
    return None if value is None else dumps(value, name).decode()


# ---- plans ---------------------------------------------------------------------------------------


def _agent_write_plan(agent_id: str, what: str, stmt: Stmt, *, touch_ms: int | None, lock: str) -> Plan[None]:
    """``stmt`` once the agent's row is held until commit (so the agent cannot be deleted under the
    insert), or ``AgentNotFound``; ``touch_ms`` also marks the agent as updated, so retention keeps
    an agent that waits for a human."""
    if touch_ms is None:
        check = Stmt(f"SELECT agent_id FROM agents WHERE agent_id = ?{lock}", (agent_id,), "one")
    else:
        check = Stmt(
            "UPDATE agents SET updated_at_ms = ? WHERE agent_id = ? RETURNING agent_id",
            (touch_ms, agent_id),
            "one",
        )
    if (yield check) is None:
        raise AgentNotFound(f"agent {agent_id!r} has no info; save_info before saving {what}")
    yield stmt


_UPSERT_STATE = (
    "INSERT INTO suspended_states (agent_id, state_id, payload, created_at_ms, expires_at_ms)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent_id, state_id) DO UPDATE SET payload = excluded.payload,"
    " created_at_ms = excluded.created_at_ms, expires_at_ms = excluded.expires_at_ms"
)
_STATE_COLUMNS = "agent_id, state_id, payload, created_at_ms, expires_at_ms"
_STATE_ORDER = " ORDER BY created_at_ms DESC, agent_id DESC, state_id DESC"
_INSERT_FEEDBACK = (
    "INSERT INTO feedback (feedback_id, agent_id, rating, comment, message_seq, correction, metadata,"
    " created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_FEEDBACK_COLUMNS = "feedback_id, agent_id, rating, comment, message_seq, correction, metadata, created_at_ms"
_FEEDBACK_ORDER = ("created_at_ms", "feedback_id")


def _state_from_row(row: Row) -> SuspendedState:
    agent_id, state_id, payload, created_at, expires_at = row
    return SuspendedState(agent_id, state_id, loads(payload), int(created_at), int(expires_at))


def _feedback_from_row(row: Row) -> Feedback:
    feedback_id, agent_id, rating, comment, message_seq, correction, metadata, created_at = row
    return Feedback(
        id=feedback_id,
        agent_id=agent_id,
        rating=int(rating),
        created_at=int(created_at),
        comment=comment,
        message_seq=None if message_seq is None else int(message_seq),
        correction=None if correction is None else loads(correction),
        metadata=None if metadata is None else loads(metadata),
    )


class HumanLoopMixin(_Base):
    """Suspended states and feedback for ``ExtendedStore`` (any store whose ``_records`` is SQL)."""

    # ---- suspended states ------------------------------------------------------------------------

    @operation("saves")
    async def save_suspended_state(
        self, agent_id: str, state_id: str, payload: JSONDict, ttl: timedelta = DEFAULT_STATE_TTL
    ) -> SuspendedState:
        """Insert or replace the state ``state_id`` of the agent, readable for ``ttl`` from now.

        ``payload`` must be a JSON-serialisable dict (an error names the offending field). The agent
        must have info (``AgentNotFound`` otherwise); saving marks it as updated now."""
        state_id = _check_state_id(state_id)
        if not isinstance(payload, dict):
            raise ValueError(f"payload must be a dict, got {type(payload).__name__}")
        body = dumps(payload, "payload").decode()
        ttl_ms = _ttl_ms(ttl)
        now = now_ms()
        stmt = Stmt(_UPSERT_STATE, (agent_id, state_id, body, now, now + ttl_ms))
        plan = partial(_agent_write_plan, agent_id, "a suspended state", stmt, touch_ms=now, lock="")
        await self._records.driver.run(plan, write=True)
        return SuspendedState(agent_id, state_id, loads(body), now, now + ttl_ms)

    @operation("loads")
    async def get_suspended_state(self, agent_id: str, state_id: str) -> SuspendedState | None:
        """The state, or None when it is absent or expired."""
        stmt = Stmt(
            f"SELECT {_STATE_COLUMNS} FROM suspended_states"
            " WHERE agent_id = ? AND state_id = ? AND expires_at_ms > ?",
            (agent_id, _check_state_id(state_id), now_ms()),
            "one",
        )
        row = await self._records.driver.fetch(stmt)
        return None if row is None else _state_from_row(row)

    @operation("loads")
    async def list_suspended_states(self, agent_id: str | None = None) -> builtins.list[SuspendedState]:
        """Unexpired states of one agent, or of all agents; newest first (then agent id, state id)."""
        agent_sql, params = ("", ()) if agent_id is None else (" AND agent_id = ?", (agent_id,))
        stmt = Stmt(
            f"SELECT {_STATE_COLUMNS} FROM suspended_states WHERE expires_at_ms > ?{agent_sql}{_STATE_ORDER}",
            (now_ms(), *params),
            "all",
        )
        return [_state_from_row(row) for row in await self._records.driver.fetch(stmt)]

    @operation("deletes")
    async def delete_suspended_state(self, agent_id: str, state_id: str) -> bool:
        """Remove the state (typically once the human decided); True when it existed unexpired."""
        stmt = Stmt(
            "DELETE FROM suspended_states WHERE agent_id = ? AND state_id = ? RETURNING expires_at_ms",
            (agent_id, _check_state_id(state_id)),
            "one",
        )
        now = now_ms()
        row = await self._records.driver.fetch(stmt, write=True)
        return row is not None and int(row[0]) > now

    @operation("deletes")
    async def cleanup_expired_states(self) -> int:
        """Delete every expired state; returns how many. Reads already ignore them."""
        stmt = Stmt("DELETE FROM suspended_states WHERE expires_at_ms <= ? RETURNING 1", (now_ms(),), "all")
        return len(await self._records.driver.fetch(stmt, write=True))

    # ---- feedback --------------------------------------------------------------------------------

    @operation("saves")
    async def add_feedback(
        self,
        agent_id: str,
        rating: int,
        comment: str | None = None,
        message_seq: int | None = None,
        correction: str | JSONDict | None = None,
        metadata: JSONDict | None = None,
    ) -> str:
        """Record a rating from 1 to 5 (an int; ``True`` is not one) and return the feedback's id.

        ``correction`` is what the agent should have said (text or a JSON object); ``metadata`` any
        JSON object. The agent must have info (``AgentNotFound`` otherwise)."""
        _rating(rating, "rating")
        check_optional_str(comment, "comment")
        if message_seq is not None and check_limit(message_seq, "message_seq") > _MAX_INT:
            raise ValueError(f"message_seq is out of range: {message_seq}")
        if correction is not None and not isinstance(correction, (str, dict)):
            raise ValueError(f"correction must be a string or a dict, got {type(correction).__name__}")
        check_dict(metadata, "metadata")
        feedback_id = f"fb-{uuid.uuid4().hex}"
        params = (
            feedback_id,
            agent_id,
            rating,
            comment,
            message_seq,
            _optional_json(correction, "correction"),
            _optional_json(metadata, "metadata"),
            now_ms(),
        )
        lock = self._records.driver.dialect.for_update
        plan = partial(
            _agent_write_plan, agent_id, "feedback", Stmt(_INSERT_FEEDBACK, params), touch_ms=None, lock=lock
        )
        await self._records.driver.run(plan, write=True)
        return feedback_id

    @operation("queries")
    async def query_feedback(
        self,
        *,
        agent_id: str | None = None,
        min_rating: int | None = None,
        max_rating: int | None = None,
        created_after: Timestamp | None = None,
        created_before: Timestamp | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Feedback]:
        """Feedback newest first (then by id, so paging returns each row once); ratings between
        ``min_rating`` and ``max_rating`` inclusive, ``created_after`` inclusive, ``created_before``
        exclusive (a ``datetime`` or epoch ms)."""
        window = Window.build(created_after, created_before, limit, offset)
        where = Where()
        where.add_if(agent_id, "agent_id = ?")
        where.add_if(None if min_rating is None else _rating(min_rating, "min_rating"), "rating >= ?")
        where.add_if(None if max_rating is None else _rating(max_rating, "max_rating"), "rating <= ?")
        stmt = select_page(
            _FEEDBACK_COLUMNS, "feedback", where, "created_at_ms", _FEEDBACK_ORDER, "DESC", window
        )
        return [_feedback_from_row(row) for row in await self._records.driver.fetch(stmt)]
