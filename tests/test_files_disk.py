"""``DiskFiles``: every method round trips, owner-only files, nothing created by reads, clean deletes."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import stat
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio

from kodestore import SqliteStore
from kodestore.errors import AgentDeleted, InvalidAgentId, SerializationError, StorageError
from kodestore.files.disk import DiskFiles

pytestmark = pytest.mark.asyncio

AWKWARD = 'nul \x00 newline \n cr \r crlf \r\n tab \t quote " backslash \\ emoji 😀 \u2028 é 中'


def timeline(seq: int, channel: str = "progress", text: str = "") -> dict[str, Any]:
    return {
        "cursor": seq,
        "bookmark": {"seq": seq, "timestamp": 1_700_000_000_000 + seq},
        "event": {"channel": channel, "type": "text", "text": text},
    }


def all_paths(base: Path) -> list[Path]:
    return sorted(base.rglob("*"))


@pytest_asyncio.fixture
async def files(tmp_path: Path) -> AsyncIterator[DiskFiles]:
    store = DiskFiles(tmp_path / "store")
    await store.open()
    yield store
    await store.close()


async def test_events_round_trip(files: DiskFiles) -> None:
    events = [timeline(seq, ("progress", "control")[seq % 2], AWKWARD * (seq % 3)) for seq in range(10)]
    for event in events:
        await files.append_events("a", event)
    assert [e async for e in files.read_events("a", None, None)] == events
    assert [e async for e in files.read_events("a", 6, None)] == events[7:]
    assert [e async for e in files.read_events("a", None, "control")] == events[1::2]
    assert [e async for e in files.read_events("b", None, None)] == []
    report = await files.inspect_events("a")
    assert (report.lines, report.max_seq, report.torn_tail) == (10, 9, False)


async def test_whole_file_values_round_trip(files: DiskFiles) -> None:
    todos = {"todos": [{"id": "1", "title": AWKWARD, "status": "pending"}], "version": 3, "updatedAt": 5}
    await files.save_todos("a", todos)
    assert await files.load_todos("a") == todos
    todos["version"] = 4
    await files.save_todos("a", todos)
    assert await files.load_todos("a") == todos

    media = [{"key": AWKWARD, "provider": "p", "mimeType": "image/png", "sizeBytes": 3}]
    await files.save_media_cache("a", media)
    assert await files.load_media_cache("a") == media
    await files.save_media_cache("a", [])
    assert await files.load_media_cache("a") == []


async def test_history_round_trips_oldest_first_and_byte_exact(files: DiskFiles) -> None:
    content = "".join(chr(c) for c in range(0, 0x300)) + "\r\n\r\x00😀\U0010ffff"
    recovered: list[dict[str, Any]] = [
        {"path": f"/f{i}", "content": content[i:], "mtime": i, "timestamp": i} for i in range(3)
    ]
    for record in recovered:
        await files.append_history("a", "recovered", record)
    await files.append_history("a", "windows", {"id": "w1", "messages": [], "events": [], "stats": {}})
    await files.append_history("a", "compressions", {"id": "c1", "summary": AWKWARD})
    loaded = await files.load_history("a", "recovered")
    assert loaded == recovered
    assert [r["content"].encode("utf-8") for r in loaded] == [r["content"].encode("utf-8") for r in recovered]
    assert await files.load_history("a", "windows") == [
        {"id": "w1", "messages": [], "events": [], "stats": {}}
    ]
    assert await files.load_history("a", "compressions") == [{"id": "c1", "summary": AWKWARD}]
    lines = (files.agent_dir("a") / "history" / "recovered.jsonl").read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""  # one line per record, whatever the content


async def test_loads_of_unknown_agents_create_nothing(files: DiskFiles) -> None:
    assert await files.load_todos("ghost") is None
    assert await files.load_media_cache("ghost") == []
    for kind in ("windows", "compressions", "recovered"):
        assert await files.load_history("ghost", kind) == []
    assert [e async for e in files.read_events("ghost", 3, "progress")] == []
    assert (await files.inspect_events("ghost")).lines == 0
    assert await files.agent_ids() == []
    assert all_paths(files.base_dir) == []


async def test_files_are_owner_only(files: DiskFiles) -> None:
    await files.append_events("a", timeline(1))
    await files.save_todos("a", {"todos": []})
    await files.save_media_cache("a", [])
    await files.append_history("a", "windows", {"id": "w"})
    paths = all_paths(files.base_dir)
    assert len(paths) == 6  # a/, events.jsonl, todos.json, media-cache.json, history/, windows.jsonl
    for path in [files.base_dir, *paths]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path


async def test_delete_agent_removes_its_files_and_leaves_a_tombstone(files: DiskFiles) -> None:
    for agent in ("a", "b"):
        await files.append_events(agent, timeline(1))
        await files.save_todos(agent, {"todos": []})
        await files.save_media_cache(agent, [])
        await files.append_history(agent, "recovered", {"path": "p", "content": "c"})
    (files.agent_dir("a") / "events.quarantine").write_bytes(b"torn\n")
    await files.delete_agent("a", 1_000)
    assert [p.name for p in files.agent_dir("a").iterdir()] == [".deleted"]
    assert await files.agent_ids() == ["b"]
    assert await files.load_todos("a") is None
    await files.delete_agent("a", 2_000)  # deleting twice is fine
    for late_write in (
        files.append_events("a", timeline(7)),
        files.save_todos("a", {"todos": []}),
        files.append_history("a", "windows", {"id": "w"}),
    ):
        with pytest.raises(AgentDeleted):
            await late_write
    assert [p.name for p in files.agent_dir("a").iterdir()] == [".deleted"]
    await files.revive("a")  # the agent is created again
    await files.append_events("a", timeline(7))  # the cached descriptor was closed: a fresh log
    assert [e["cursor"] async for e in files.read_events("a", None, None)] == [7]


async def test_delete_agent_keeps_a_directory_the_records_still_use(files: DiskFiles) -> None:
    await files.append_events("a", timeline(1))
    (files.agent_dir("a") / "info.json").write_text("{}")
    await files.delete_agent("a", 1_000)
    assert sorted(p.name for p in files.agent_dir("a").iterdir()) == [".deleted", "info.json"]


async def test_agent_ids_lists_directories_with_files(files: DiskFiles, tmp_path: Path) -> None:
    await files.append_history("only-history", "windows", {"id": "w"})
    await files.save_todos("b", {"todos": []})
    (files.base_dir / "empty").mkdir()
    (files.base_dir / ".hidden").mkdir()  # a valid agent id like any other
    (files.base_dir / ".hidden" / "x").write_text("x")
    assert await files.agent_ids() == [".hidden", "b", "only-history"]
    assert await DiskFiles(tmp_path / "missing").agent_ids() == []


async def test_size_bytes_counts_every_file(files: DiskFiles) -> None:
    assert await files.size_bytes() == 0
    todos = {"todos": [AWKWARD]}
    await files.save_todos("a", todos)
    assert await files.size_bytes() == len(orjson.dumps(todos))
    await files.append_events("b", timeline(1))
    assert await files.size_bytes() == len(orjson.dumps(todos)) + len(orjson.dumps(timeline(1))) + 1


async def test_check_writable(files: DiskFiles, tmp_path: Path) -> None:
    assert await files.check_writable() is None
    assert all_paths(files.base_dir) == []  # the probe is removed
    fresh = DiskFiles(tmp_path / "new" / "store")
    assert await fresh.check_writable() is None
    assert stat.S_IMODE((tmp_path / "new" / "store").stat().st_mode) == 0o700
    (tmp_path / "blocker").write_text("a file where the store should be")
    problem = await DiskFiles(tmp_path / "blocker" / "store").check_writable()
    assert problem is not None and "not writable" in problem


async def test_unserialisable_values_raise_and_write_nothing(files: DiskFiles) -> None:
    with pytest.raises(SerializationError, match=r"event\.event\.bad"):
        await files.append_events("a", {**timeline(1), "event": {"channel": "progress", "bad": {1, 2}}})
    with pytest.raises(SerializationError, match=r"todos\.when"):
        await files.save_todos("a", {"when": object()})
    with pytest.raises(SerializationError, match=r"history\.windows\.stats"):
        await files.append_history("a", "windows", {"stats": b"bytes"})
    assert all_paths(files.base_dir) == []


async def test_failed_whole_file_write_keeps_the_old_value(
    files: DiskFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    await files.save_todos("a", {"version": 1})

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StorageError, match="No space left on device"):
        await files.save_todos("a", {"version": 2})
    monkeypatch.undo()
    assert await files.load_todos("a") == {"version": 1}
    assert [p.name for p in files.agent_dir("a").iterdir()] == ["todos.json"]  # no temp file left


async def test_corrupt_history_line_is_skipped(files: DiskFiles) -> None:
    await files.append_history("a", "windows", {"id": "w1"})
    with (files.agent_dir("a") / "history" / "windows.jsonl").open("ab") as f:
        f.write(b"not json\n[1]\n")
    await files.append_history("a", "windows", {"id": "w2"})
    assert await files.load_history("a", "windows") == [{"id": "w1"}, {"id": "w2"}]


async def test_corrupt_whole_file_raises_storage_error(files: DiskFiles) -> None:
    await files.save_todos("a", {"version": 1})
    (files.agent_dir("a") / "todos.json").write_text("{truncated")
    with pytest.raises(StorageError, match="not valid JSON"):
        await files.load_todos("a")


async def test_fsync_durability_fsyncs_files_and_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    files = DiskFiles(tmp_path, "fsync")
    await files.save_todos("a", {"todos": []})
    assert synced == [False, True]  # the temp file, then the directory holding the rename
    await files.append_history("a", "windows", {"id": "w"})
    assert synced == [False, True, False]
    assert await files.load_history("a", "windows") == [{"id": "w"}]
    await files.close()


async def test_agent_ids_that_could_escape_are_refused(files: DiskFiles) -> None:
    for bad in ("../x", "..", "a/b"):
        with pytest.raises(InvalidAgentId):
            await files.save_todos(bad, {})


def _times_open(path: Path) -> int:
    """How many of this process's descriptors point at ``path`` right now."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:  # the descriptor listdir itself used, already closed
            continue
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
async def test_a_read_stopped_early_closes_the_log_when_closed(tmp_path: Path) -> None:
    """Closing the store's event iterator mid-way closes the file before ``aclose`` returns, not when
    the garbage collector and the event loop get round to the nested generators (a leaked file, and a
    ResourceWarning, when the loop ends first)."""
    async with SqliteStore(tmp_path / "agents.db", tmp_path / "files") as store:
        for seq in range(5):
            await store.append_event("a", timeline(seq))
        log = tmp_path / "files" / "a" / "events.jsonl"
        open_before = _times_open(log)
        reader = store.read_events("a", since=1)
        assert (await anext(reader)).bookmark.seq == 2
        assert _times_open(log) == open_before + 1
        await reader.aclose()
        assert _times_open(log) == open_before


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to list open files")
async def test_a_read_cancelled_at_any_step_leaves_no_file_open(tmp_path: Path) -> None:
    """A reader cancelled at each of its await points in turn (the thread opening the file, the
    seek, a chunk read) has closed the log by the time its task is done: a copy that fails cancels the
    copies running beside it, and none may leak a file."""
    async with SqliteStore(tmp_path / "agents.db", tmp_path / "files") as store:
        for seq in range(5):
            await store.append_event("a", timeline(seq))
        log = tmp_path / "files" / "a" / "events.jsonl"
        open_before = _times_open(log)

        async def read_one() -> None:
            async with contextlib.aclosing(store.read_events("a", since=1)) as events:
                async for _ in events:
                    break

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for steps in range(30):
                reader = asyncio.create_task(read_one())
                for _ in range(steps):
                    await asyncio.sleep(0)
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                assert _times_open(log) == open_before, f"cancelled after {steps} loop steps"
            await asyncio.sleep(0.05)  # let a thread still opening a dropped file finish
            gc.collect()
        assert _times_open(log) == open_before
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
