"""``RecordBackend`` as JSON files, the record half of ``JSONStore``.

Per agent ``info.json``, ``messages.json``, ``tool-calls.json`` and ``snapshots.json`` in the agent's
directory (shared with ``DiskFiles``), each replaced atomically. Saves of one agent are serialised
within the process; across processes the store's agent lock does that. The files hold the SDK's shapes
only: there is no first-save time per message and no last-update time per agent (an export has none,
an import drops them).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from weakref import WeakValueDictionary

from kodestore.backend import AgentRecords, RecordBackend, Slice
from kodestore.config import Durability
from kodestore.errors import AgentDeleted, AgentNotFound, KodeStoreError
from kodestore.files import agent_dir, agent_dirs, create_base_dir, tombstone
from kodestore.files.atomic import (
    read_json,
    remove_dir_if_empty,
    remove_files,
    write_atomic,
)
from kodestore.jsonutil import dumps
from kodestore.models import AgentInfo, JSONDict, Message, Snapshot, ToolCallRecord
from kodestore.validation import check_unique_ids, iso_to_epoch_ms, ms_to_iso

INFO_FILE = "info.json"
MESSAGES_FILE = "messages.json"
TOOL_CALLS_FILE = "tool-calls.json"
SNAPSHOTS_FILE = "snapshots.json"
RECORD_FILES = (INFO_FILE, MESSAGES_FILE, TOOL_CALLS_FILE, SNAPSHOTS_FILE)


class JsonRecords(RecordBackend):
    """Agent info, messages, tool calls and snapshots under ``base_dir/<agent_id>/``."""

    def __init__(self, base_dir: str | os.PathLike[str], durability: Durability = "os") -> None:
        self.base_dir = Path(base_dir)
        self.durability: Durability = durability
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def __repr__(self) -> str:
        return f"JsonRecords({str(self.base_dir)!r}, durability={self.durability!r})"

    # ---- blocking helpers, run in a thread --------------------------------------------------------

    def _path(self, agent_id: str, name: str) -> Path:
        return agent_dir(self.base_dir, agent_id) / name

    def _read(self, agent_id: str, name: str) -> Any:
        return read_json(self._path(agent_id, name))

    def _write(self, agent_id: str, name: str, value: Any, what: str) -> None:
        write_atomic(self._path(agent_id, name), dumps(value, what), self.durability)

    def _require_info(self, agent_id: str) -> JSONDict:
        info: JSONDict | None = self._read(agent_id, INFO_FILE)
        if info is None:
            raise AgentNotFound(f"agent {agent_id!r} has no info; save_info first")
        return info

    def _save_info(self, info: AgentInfo) -> None:
        directory = agent_dir(self.base_dir, info.agent_id)
        deleted = tombstone.deleted_at(directory)
        if deleted is not None and not directory.joinpath(INFO_FILE).exists():
            created = iso_to_epoch_ms(info.created_at, "info.created_at")
            if created < deleted:
                raise AgentDeleted(
                    f"agent {info.agent_id!r} was deleted at {ms_to_iso(deleted)}; an info created"
                    f" before that ({info.created_at}) is a late write and was refused"
                )
        self._write(info.agent_id, INFO_FILE, info.to_dict(), "info")

    def _save_messages(self, agent_id: str, messages: list[JSONDict]) -> None:
        info = self._require_info(agent_id)
        self._write(agent_id, MESSAGES_FILE, messages, "messages")
        info["messageCount"] = len(messages)
        self._write(agent_id, INFO_FILE, info, "info")

    def _save_tool_calls(self, agent_id: str, records: list[JSONDict]) -> None:
        self._require_info(agent_id)
        self._write(agent_id, TOOL_CALLS_FILE, records, "records")

    def _spliced(
        self, agent_id: str, name: str, start: int, items: list[JSONDict], what: str
    ) -> list[JSONDict]:
        """The stored list ``name`` up to ``start``, then ``items``."""
        if not start:
            return items
        stored: list[JSONDict] = self._read(agent_id, name) or []
        if start > len(stored):
            raise ValueError(
                f"{what} start at position {start}, but {len(stored)} are stored: the ones in between"
                " are missing"
            )
        return [*stored[:start], *items]

    def _turn_lists(
        self,
        agent_id: str,
        messages: Slice[Message] | None,
        tool_calls: Slice[ToolCallRecord] | None,
    ) -> tuple[list[JSONDict] | None, list[JSONDict] | None]:
        """The whole message and tool-call lists after the turn, validated, before any write."""
        message_list = record_list = None
        if messages is not None:
            message_list = self._spliced(
                agent_id, MESSAGES_FILE, messages[1], [m.to_dict() for m in messages[0]], "messages"
            )
        if tool_calls is not None:
            record_list = self._spliced(
                agent_id, TOOL_CALLS_FILE, tool_calls[1], _stored_tool_calls(tool_calls[0]), "records"
            )
            check_unique_ids([str(record.get("id")) for record in record_list])
        return message_list, record_list

    def _save_turn(
        self,
        agent_id: str,
        messages: list[JSONDict] | None,
        tool_calls: list[JSONDict] | None,
        info: AgentInfo | None,
    ) -> None:
        if info is not None:
            self._save_info(info)
        if messages is not None:
            self._save_messages(agent_id, messages)
        if tool_calls is not None:
            self._save_tool_calls(agent_id, tool_calls)

    def _save_snapshot(self, agent_id: str, snapshot: Snapshot) -> None:
        self._require_info(agent_id)
        snapshots: list[JSONDict] = self._read(agent_id, SNAPSHOTS_FILE) or []
        data = snapshot.to_dict()
        for i, existing in enumerate(snapshots):
            if existing.get("id") == snapshot.id:
                snapshots[i] = data  # an upsert keeps the first-saved position
                break
        else:
            snapshots.append(data)
        self._write(agent_id, SNAPSHOTS_FILE, snapshots, f"snapshot[{snapshot.id!r}]")

    def _import(self, records: AgentRecords) -> None:
        """Info last: until it is written, a first import is no agent at all (``list`` skips it)."""
        agent_id = records.info.agent_id
        tool_calls = _stored_tool_calls(records.tool_calls)  # refuses duplicate ids before any write
        self._write(agent_id, MESSAGES_FILE, [m.to_dict() for m in records.messages], "messages")
        self._write(agent_id, TOOL_CALLS_FILE, tool_calls, "records")
        self._write(agent_id, SNAPSHOTS_FILE, [s.to_dict() for s in records.snapshots], "snapshots")
        self._write(agent_id, INFO_FILE, records.info.to_dict(), "info")

    def _delete(self, agent_id: str) -> None:
        directory = agent_dir(self.base_dir, agent_id)
        remove_files(directory, RECORD_FILES)
        remove_dir_if_empty(directory)  # DiskFiles removes it instead if its files are still there

    def _list_agents(self, prefix: str | None) -> list[str]:
        return sorted(
            entry.name
            for entry in agent_dirs(self.base_dir)
            if (not prefix or entry.name.startswith(prefix)) and os.path.isfile(Path(entry.path, INFO_FILE))
        )

    # ---- the interface ---------------------------------------------------------------------------

    async def _locked(self, agent_id: str, save: Callable[[], None]) -> None:
        """Run ``save`` in a thread while no other save of this agent runs in this process."""
        async with self._lock(agent_id):
            await asyncio.to_thread(save)

    def _lock(self, agent_id: str) -> asyncio.Lock:
        lock = self._locks.get(agent_id)
        if lock is None:
            lock = self._locks[agent_id] = asyncio.Lock()
        return lock

    async def open(self) -> None:
        create_base_dir(self.base_dir)

    async def close(self) -> None:
        return None  # no descriptor stays open between calls

    async def save_info(self, info: AgentInfo, now_ms: int) -> bool:
        await self._locked(info.agent_id, lambda: self._save_info(info))
        return True  # the tombstone lives beside the info file: always have it checked

    async def load_info(self, agent_id: str) -> JSONDict | None:
        info: JSONDict | None = await asyncio.to_thread(self._read, agent_id, INFO_FILE)
        return info

    async def save_messages(self, agent_id: str, messages: Sequence[Message], now_ms: int) -> None:
        data = [m.to_dict() for m in messages]
        await self._locked(agent_id, lambda: self._save_messages(agent_id, data))

    async def load_messages(self, agent_id: str) -> list[JSONDict]:
        return await asyncio.to_thread(self._read, agent_id, MESSAGES_FILE) or []

    async def save_tool_calls(self, agent_id: str, records: Sequence[ToolCallRecord], now_ms: int) -> None:
        data = _stored_tool_calls(records)
        await self._locked(agent_id, lambda: self._save_tool_calls(agent_id, data))

    async def load_tool_calls(self, agent_id: str) -> list[JSONDict]:
        return await asyncio.to_thread(self._read, agent_id, TOOL_CALLS_FILE) or []

    async def save_turn(
        self,
        agent_id: str,
        messages: Slice[Message] | None,
        tool_calls: Slice[ToolCallRecord] | None,
        info: AgentInfo | None,
        now_ms: int,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Info, then messages, then tool calls: each file atomic, the turn as a whole not."""
        async with self._lock(agent_id):
            message_list, record_list = await asyncio.to_thread(
                self._turn_lists, agent_id, messages, tool_calls
            )
            if before is not None:
                await before()
            await asyncio.to_thread(self._save_turn, agent_id, message_list, record_list, info)
        return info is not None

    async def import_agent(self, records: AgentRecords, now_ms: int) -> None:
        """Each file atomic, the agent as a whole not (as ``save_turn``); the timestamps are dropped.
        Side rows (suspended states, feedback, checkpoints) have nowhere to go: refused, before any
        write, unless there are none (``ops.migrate`` leaves them out and counts them instead)."""
        if any(records.side_rows.values()):
            raise KodeStoreError(
                f"agent {records.info.agent_id!r}: a JSONStore keeps no suspended states, feedback or"
                f" LangGraph checkpoints; {', '.join(sorted(records.side_rows))} rows cannot be imported"
            )
        await self._locked(records.info.agent_id, lambda: self._import(records))

    async def save_snapshot(self, agent_id: str, snapshot: Snapshot, now_ms: int) -> None:
        await self._locked(agent_id, lambda: self._save_snapshot(agent_id, snapshot))

    async def load_snapshot(self, agent_id: str, snapshot_id: str) -> JSONDict | None:
        for snapshot in await self.list_snapshots(agent_id):
            if snapshot.get("id") == snapshot_id:
                return snapshot
        return None

    async def list_snapshots(self, agent_id: str) -> list[JSONDict]:
        return await asyncio.to_thread(self._read, agent_id, SNAPSHOTS_FILE) or []

    async def exists(self, agent_id: str) -> bool:
        return await asyncio.to_thread(self._path(agent_id, INFO_FILE).is_file)

    async def delete(self, agent_id: str, now_ms: int) -> None:
        """Removes the record files; ``DiskFiles`` (the same directory) keeps the tombstone."""
        await self._locked(agent_id, lambda: self._delete(agent_id))

    async def clear_tombstone(self, agent_id: str) -> None:
        return None  # the tombstone is DiskFiles': the store revives it there

    async def list_agents(self, prefix: str | None) -> list[str]:
        return await asyncio.to_thread(self._list_agents, prefix)


def _stored_tool_calls(records: Sequence[ToolCallRecord]) -> list[JSONDict]:
    """The records as ``tool-calls.json`` holds them; ``ValueError`` for an id seen twice."""
    check_unique_ids([record.id for record in records])
    stored: list[JSONDict] = []
    for record in records:
        data = record.to_dict()
        data.pop("agentId", None)  # query-only attribute, never stored
        stored.append(data)
    return stored
