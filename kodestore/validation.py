"""Checks run before anything is read or written: ids, paging, dates, enumerations."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from kodestore.errors import InvalidAgentId

MAX_AGENT_ID_LENGTH = 200
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


_VALID_IDS: set[str] = set()  # ids that passed: a runtime names the same few agents call after call
_VALID_IDS_KEPT = 4096


def validate_agent_id(agent_id: object) -> str:
    """Return ``agent_id`` if it is safe as a file name and a key; raise ``InvalidAgentId`` otherwise."""
    if type(agent_id) is not str:  # a subclass may redefine == and hash: checked every time, not cached
        return _check_agent_id(agent_id)
    if agent_id not in _VALID_IDS:
        _check_agent_id(agent_id)
        if len(_VALID_IDS) >= _VALID_IDS_KEPT:
            _VALID_IDS.clear()
        _VALID_IDS.add(agent_id)
    return agent_id


def _check_agent_id(agent_id: object) -> str:
    if not isinstance(agent_id, str):
        raise InvalidAgentId(f"agent id must be a string, got {type(agent_id).__name__}")
    if not agent_id:
        raise InvalidAgentId("agent id must not be empty")
    if len(agent_id) > MAX_AGENT_ID_LENGTH:
        raise InvalidAgentId(f"agent id longer than {MAX_AGENT_ID_LENGTH} characters")
    if agent_id in (".", ".."):
        raise InvalidAgentId(f"agent id {agent_id!r} is reserved")
    if "/" in agent_id or "\\" in agent_id:
        raise InvalidAgentId(f"agent id {agent_id!r} contains a path separator")
    if _CONTROL_CHARS.search(agent_id):
        raise InvalidAgentId(f"agent id {agent_id!r} contains a control character")
    return agent_id


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_epoch_ms(value: object, name: str) -> int | None:
    """Accept ``None``, a ``datetime`` (naive means UTC) or epoch milliseconds; else ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be a datetime or epoch milliseconds, got {type(value).__name__}")


def iso_to_epoch_ms(value: str, name: str) -> int:
    """Parse the SDK's ISO-8601 timestamps (``2024-01-01T00:00:00.000Z``)."""
    try:
        return _iso_ms(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an ISO-8601 timestamp, got {value!r}") from exc


@lru_cache(maxsize=4096)
def _iso_ms(value: str) -> int:
    """Cached: an agent's info carries the same ``created_at`` in every save."""
    return to_epoch_ms(datetime.fromisoformat(value), "created_at") or 0


def ms_to_iso(ms: int) -> str:
    """Epoch ms as the SDK writes timestamps (millisecond precision, ``Z``)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_limit(value: object, name: str = "limit") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def check_optional_str(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value


def check_optional_bool(value: object, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_choice(value: object, name: str, choices: Iterable[str]) -> str:
    allowed = choices if isinstance(choices, tuple) else tuple(choices)  # no copy per call for a tuple
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def check_dict(value: Any, name: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    return value


def check_unique_ids(ids: Sequence[str]) -> None:
    """``ValueError`` naming the first tool-call id seen twice, at its position in ``records``."""
    if len(set(ids)) == len(ids):
        return
    seen: set[str] = set()
    for position, record_id in enumerate(ids):
        if record_id in seen:
            raise ValueError(f"records[{position}]: duplicate tool call id {record_id!r}")
        seen.add(record_id)
