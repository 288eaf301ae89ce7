"""Models to database rows and back, computed once in Python for every SQL dialect.

Each row carries a content hash so a save writes only what changed; JSON columns are text so that
SQLite stores them as-is and Postgres casts them to ``jsonb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

from kodestore.jsonutil import dumps, loads
from kodestore.models import AgentInfo, JSONDict, Message, Snapshot, ToolCallRecord
from kodestore.validation import iso_to_epoch_ms

_MESSAGE_KEYS = ("role", "content", "metadata")


def _digest(*parts: bytes) -> bytes:
    h = blake2b(digest_size=16)
    for part in parts:
        h.update(part)
        h.update(b"\x1e")
    return h.digest()


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


@dataclass(frozen=True, slots=True)
class InfoRow:
    agent_id: str
    template_id: str
    created_at_ms: int
    message_count: int
    metadata: str | None
    lineage: str
    info: str


@dataclass(frozen=True, slots=True)
class MessageRow:
    seq: int
    role: str
    content: str
    metadata: str | None
    extra: str | None
    hash: bytes


@dataclass(frozen=True, slots=True)
class ToolCallRow:
    id: str
    position: int
    name: str
    state: str
    is_error: bool
    approval_required: bool
    created_at: int
    record: str
    hash: bytes


def info_row(info: AgentInfo) -> InfoRow:
    data = info.to_dict()
    return InfoRow(
        agent_id=info.agent_id,
        template_id=info.template_id,
        created_at_ms=iso_to_epoch_ms(info.created_at, "info.created_at"),
        message_count=info.message_count,
        metadata=_text(None if info.metadata is None else dumps(info.metadata, "info.metadata")),
        lineage=dumps(info.lineage, "info.lineage").decode(),
        info=dumps(data, "info").decode(),
    )


def message_rows(messages: Sequence[Message]) -> list[MessageRow]:
    rows = []
    for seq, message in enumerate(messages):
        where = f"messages[{seq}]"
        content = dumps(message.content, f"{where}.content")
        metadata = None if message.metadata is None else dumps(message.metadata, f"{where}.metadata")
        extra = dumps(message.extra, where) if message.extra else None
        role = message.role.encode()
        rows.append(
            MessageRow(
                seq=seq,
                role=message.role,
                content=content.decode(),
                metadata=_text(metadata),
                extra=_text(extra),
                hash=_digest(role, content, metadata or b"", extra or b""),
            )
        )
    return rows


def message_from_columns(role: str, content: str, metadata: str | None, extra: str | None) -> JSONDict:
    data: JSONDict = {"role": role, "content": loads(content)}
    if metadata is not None:
        data["metadata"] = loads(metadata)
    if extra is not None:
        data.update(loads(extra))
    return data


def tool_call_rows(records: Sequence[ToolCallRecord]) -> list[ToolCallRow]:
    rows = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        if record.id in seen:
            raise ValueError(f"records[{position}]: duplicate tool call id {record.id!r}")
        seen.add(record.id)
        data = record.to_dict()
        data.pop("agentId", None)  # query-only attribute, never stored
        body = dumps(data, f"records[{position}]")
        approval = record.approval if isinstance(record.approval, dict) else {}
        rows.append(
            ToolCallRow(
                id=record.id,
                position=position,
                name=record.name,
                state=str(record.state),
                is_error=bool(record.is_error),
                approval_required=approval.get("required") is True,
                created_at=int(record.created_at),
                record=body.decode(),
                hash=_digest(body, str(position).encode()),
            )
        )
    return rows


def snapshot_body(snapshot: Snapshot) -> str:
    return dumps(snapshot.to_dict(), f"snapshot[{snapshot.id!r}]").decode()


def json_or_none(text: Any) -> Any:
    return None if text is None else loads(text)
