"""Models to database rows and back, computed once in Python for every SQL dialect.

Each row carries a content hash so a save writes only what changed; JSON columns are text so that
SQLite stores them as-is and Postgres casts them to ``jsonb``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from operator import attrgetter
from typing import Any, Generic, TypeVar

import orjson

from kodestore.jsonutil import dumps, loads
from kodestore.models import AgentInfo, JSONDict, Message, Snapshot, ToolCallRecord
from kodestore.validation import check_unique_ids, iso_to_epoch_ms

_MESSAGE_KEYS = ("role", "content", "metadata")
_COMMA = 0x2C
_ID = attrgetter("id")
R = TypeVar("R")


def _digest(*parts: bytes) -> bytes:
    h = blake2b(digest_size=16)
    for part in parts:
        h.update(part)
        h.update(b"\x1e")
    return h.digest()


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode()


# not frozen: built on every save (see ``kodestore.db.base``), never changed once built
@dataclass(slots=True)
class InfoRow:
    agent_id: str
    template_id: str
    created_at_ms: int
    message_count: int
    metadata: str | None
    lineage: str
    info: str


@dataclass(slots=True)
class MessageRow:
    seq: int
    role: str
    content: str
    metadata: str | None
    extra: str | None
    hash: bytes


@dataclass(slots=True)
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


def message_rows(messages: Sequence[Message], first: int = 0, *, base: int = 0) -> list[MessageRow]:
    """Rows of ``messages[first:]``; ``messages[i]`` is at seq ``base + i`` of the history."""
    rows = []
    for index in range(first, len(messages)):
        message = messages[index]
        seq = base + index
        where = f"messages[{index}]"
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


def tool_call_rows(records: Sequence[ToolCallRecord], first: int = 0, *, base: int = 0) -> list[ToolCallRow]:
    """Rows of ``records[first:]``, ``records[i]`` at position ``base + i``; ids must be unique."""
    check_unique_ids(list(map(_ID, records)))
    rows = []
    for index in range(first, len(records)):
        record = records[index]
        position = base + index
        data = record.to_dict()
        data.pop("agentId", None)  # query-only attribute, never stored
        body = dumps(data, f"records[{index}]")
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


class AppendedRows(Generic[R]):
    """The rows of each agent's last saved list, reused for the unchanged start of the next one.

    A runtime saves the whole history after every turn but mostly appends to it. One orjson call
    encodes the whole new list (every field of every model, at C speed); when the previous encoding minus
    its closing bracket, then a comma, starts the new one, the first n items are unchanged (a JSON
    array parses one way only) and keep their rows: only the new items are encoded and hashed, so a
    turn's cost no longer grows with the history. An edit or a removal builds every row, as before.
    Holds at most ``max_bytes`` of encodings, least recently saved agents dropped first.
    """

    def __init__(
        self, model: type, build: Callable[[Sequence[Any], int], list[R]], max_bytes: int = 64 << 20
    ) -> None:
        # every field as a tuple, taken in C: orjson encodes tuples far faster than dataclasses
        self._fields = attrgetter(*(f.name for f in dataclasses.fields(model)))
        self._build = build
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, list[R]]] = OrderedDict()

    def rows(self, agent_id: str, items: Sequence[Any]) -> tuple[list[R], list[R] | None]:
        """The rows of ``items``, and the previous call's rows when these start with all of them
        (the list only grew, or is unchanged), else ``None``."""
        entry = self.forget(agent_id)
        try:
            key = orjson.dumps(list(map(self._fields, items)))
        except TypeError:  # not encodable natively: build (and report) as before
            return self._build(items, 0), None
        rows = kept = None
        if entry is not None:
            old_key, old_rows = entry
            if key == old_key:
                rows = kept = old_rows
            elif (
                0 < len(old_rows) < len(items)
                and len(key) > len(old_key)
                and key[len(old_key) - 1] == _COMMA
                and key.startswith(memoryview(old_key)[:-1])
            ):
                kept = old_rows
                rows = old_rows + self._build(items, len(old_rows))
        if rows is None:
            rows = self._build(items, 0)
        self._entries[agent_id] = (key, rows)
        self._bytes += 2 * len(key)  # the encoding, and about as much again in the rows' text
        while self._bytes > self._max_bytes and self._entries:
            self._bytes -= 2 * len(self._entries.popitem(last=False)[1][0])
        return rows, kept

    def forget(self, agent_id: str) -> tuple[bytes, list[R]] | None:
        entry = self._entries.pop(agent_id, None)
        if entry is not None:
            self._bytes -= 2 * len(entry[0])
        return entry
