"""``restore``: verify a backup completely, then load it into any store.

Nothing is written before the whole backup checks out: the manifest's format, the size and sha256 of
every file, and every line parsed into the models (ids, counts, event grouping). A target that already
holds agents is refused unless ``overwrite=True``; with it, the old agents are deleted only after the
verification passed. If a write fails part-way, the agents restored so far are deleted again, so the
target is left as it was found (without the agents ``overwrite`` removed).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, suppress
from pathlib import Path
from typing import IO, Any

from kodestore.errors import KodeStoreError
from kodestore.facade import Store, check_timeline
from kodestore.factory import create_store
from kodestore.jsonutil import loads
from kodestore.models import JSONDict, Timeline
from kodestore.ops.backup import (
    AGENTS_FILE,
    DATA_FILES,
    EVENTS_FILE,
    FORMAT,
    MANIFEST_FILE,
    READABLE_VERSIONS,
    file_digest,
)
from kodestore.ops.migrate import (
    AgentState,
    Progress,
    append_missing_events,
    in_order,
    side_row_count,
    write_agent,
)
from kodestore.validation import validate_agent_id


class BackupInvalid(KodeStoreError):
    """The backup is incomplete, corrupt or of an unknown format; nothing was restored."""


def _read_manifest(src: Path) -> JSONDict:
    try:
        manifest = loads((src / MANIFEST_FILE).read_bytes())
    except FileNotFoundError:
        raise BackupInvalid(f"{src} is not a kodestore backup: no {MANIFEST_FILE}") from None
    except ValueError as exc:
        raise BackupInvalid(f"{src / MANIFEST_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupInvalid(f"{src / MANIFEST_FILE} is not a {FORMAT} manifest")
    if manifest.get("formatVersion") not in READABLE_VERSIONS:
        raise BackupInvalid(
            f"backup format version {manifest.get('formatVersion')!r} is not supported (this version"
            f" reads {', '.join(map(str, READABLE_VERSIONS))}); use the kodestore version that wrote it"
        )
    return manifest


def _check_digests(src: Path, manifest: JSONDict) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(DATA_FILES):
        raise BackupInvalid(f"{src / MANIFEST_FILE}: 'files' must describe exactly {', '.join(DATA_FILES)}")
    for name in DATA_FILES:
        try:
            found = file_digest(src / name)
        except FileNotFoundError:
            raise BackupInvalid(f"{src / name} is missing") from None
        expected = files[name]
        if not isinstance(expected, dict) or found != {k: expected.get(k) for k in ("size", "sha256")}:
            raise BackupInvalid(
                f"{src / name} does not match the manifest (size {found['size']} vs"
                f" {expected.get('size') if isinstance(expected, dict) else '?'}, sha256 differs or"
                " not recorded): the backup is corrupt or incomplete"
            )


def _event(line: bytes, agent_id: str) -> Timeline:
    data = loads(line)
    if not isinstance(data, dict) or data.get("agentId") != agent_id:
        raise ValueError(f"expected an event of agent {agent_id!r}")
    timeline = Timeline.from_dict(data["timeline"])
    check_timeline(timeline)
    return timeline


def _agent_lines(agents: IO[bytes]) -> Iterator[tuple[int, AgentState, int]]:
    """(line number, agent, its event count) for every line of ``agents.jsonl``, validated."""
    for number, line in enumerate(agents, 1):
        try:
            data = loads(line)
            state = AgentState.from_json(data)
            validate_agent_id(state.agent_id)
            count = data.get("eventCount")
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError("eventCount must be a non-negative integer")
        except (KeyError, TypeError, ValueError) as exc:
            raise BackupInvalid(f"{AGENTS_FILE} line {number}: {exc}") from exc
        yield number, state, count


def _check_records(src: Path, manifest: JSONDict) -> None:
    """Parse every line as ``restore`` will, and check the totals against the manifest."""
    seen: set[str] = set()
    totals = {"messages": 0, "toolCalls": 0, "snapshots": 0, "events": 0}
    side_rows = 0
    with open(src / AGENTS_FILE, "rb") as agents, open(src / EVENTS_FILE, "rb") as events:
        for number, state, count in _agent_lines(agents):
            if state.agent_id in seen:
                raise BackupInvalid(f"{AGENTS_FILE} line {number}: agent {state.agent_id!r} appears twice")
            seen.add(state.agent_id)
            for index in range(count):
                try:
                    _event(events.readline(), state.agent_id)
                except (KeyError, TypeError, ValueError) as exc:
                    raise BackupInvalid(
                        f"{EVENTS_FILE}: event {index} of agent {state.agent_id!r}: {exc}"
                    ) from exc
            totals["messages"] += len(state.messages)
            totals["toolCalls"] += len(state.tool_calls)
            totals["snapshots"] += len(state.snapshots)
            totals["events"] += count
            side_rows += side_row_count(state)
        if events.readline():
            raise BackupInvalid(f"{EVENTS_FILE} holds events that no agent in {AGENTS_FILE} claims")
    counts = manifest.get("counts")
    recorded = {key: counts.get(key) for key in totals} if isinstance(counts, dict) else None
    if manifest.get("agents") != len(seen) or recorded != totals:
        raise BackupInvalid(
            f"the backup holds {len(seen)} agents and {totals}; its manifest says"
            f" {manifest.get('agents')} agents and {recorded}"
        )
    if manifest.get("sideRows", 0) != side_rows:  # absent before format 3, which has none
        raise BackupInvalid(
            f"the backup holds {side_rows} side rows; its manifest says {manifest.get('sideRows', 0)}"
        )


def verify_backup(src_dir: str | os.PathLike[str]) -> JSONDict:
    """Check a backup end to end without touching any store; returns its manifest.

    Raises ``BackupInvalid`` naming the first problem. Blocking: it reads every byte twice.
    """
    src = Path(src_dir)
    manifest = _read_manifest(src)
    _check_digests(src, manifest)
    _check_records(src, manifest)
    return manifest


async def _events(file: IO[bytes], agent_id: str, count: int) -> AsyncIterator[Timeline]:
    for _ in range(count):
        yield _event(file.readline(), agent_id)


async def _rollback(store: Store, agent_ids: list[str]) -> None:
    for agent_id in agent_ids:
        with suppress(Exception):  # best effort: the original error is what the caller must see
            await store.delete(agent_id)


async def _load(
    src: Path, manifest: JSONDict, store: Store, overwrite: bool, progress: Progress | None
) -> JSONDict:
    existing = await store.list()
    if existing and not overwrite:
        raise KodeStoreError(
            f"the target store already holds {len(existing)} agent(s); nothing was restored"
            " (pass overwrite=True, or --overwrite, to replace them)"
        )
    for agent_id in existing:
        await store.delete(agent_id)
    written: list[str] = []
    event_counts: list[tuple[str, int]] = []
    dropped = 0

    async def write(line: tuple[int, AgentState, int]) -> None:
        nonlocal dropped
        written.append(line[1].agent_id)
        left_out = await write_agent(store, line[1], fresh=True)
        dropped += left_out

    try:
        with open(src / AGENTS_FILE, "rb") as agents:
            writes = in_order(_agent_lines(agents), write)
            async with aclosing(writes):
                async for (number, state, count), _ in writes:
                    event_counts.append((state.agent_id, count))
                    if progress is not None:
                        progress(number, int(manifest["agents"]))
        with open(src / EVENTS_FILE, "rb") as events:  # grouped by agent, in the agents' order
            for agent_id, count in event_counts:
                await append_missing_events(store, agent_id, _events(events, agent_id, count), fresh=True)
    except BaseException:
        await _rollback(store, written)
        raise
    await store.refresh_statistics()
    restored: JSONDict = {"agents": len(written), **manifest["counts"]}
    side_rows = manifest.get("sideRows", 0)
    if side_rows:  # as migrate: dropped by a JSONStore, which keeps no states, feedback or checkpoints
        restored.update(sideRows=side_rows - dropped, sideRowsDropped=dropped)
    return {
        **restored,
        "backupCreatedAt": manifest.get("createdAt"),
        "sourceKind": (manifest.get("source") or {}).get("kind"),
    }


async def restore_into(
    src_dir: str | os.PathLike[str],
    store: Store,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> JSONDict:
    """Restore the backup in ``src_dir`` into an open ``store``; returns what was restored."""
    src = Path(src_dir)
    manifest = await asyncio.to_thread(verify_backup, src)
    return await _load(src, manifest, store, overwrite, progress)


async def restore(
    src_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> JSONDict:
    """Verify the backup, then restore it into the store ``options`` describe (as ``create_store``).

    The backup is verified before the target is even opened, so a bad backup creates no database.
    """
    src = Path(src_dir)
    manifest = await asyncio.to_thread(verify_backup, src)
    store = await create_store(**options)
    try:
        return await _load(src, manifest, store, overwrite, progress)
    finally:
        await store.close()
