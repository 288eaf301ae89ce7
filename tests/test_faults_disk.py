"""A full disk and a read-only store: a clear ``StorageError``, nothing acknowledged lost, no corruption,
and writes succeed again once space (or write access) returns.

The real thing runs on a size-limited tmpfs mounted for the test (needs root or CAP_SYS_ADMIN; the
tests that need it skip, saying so, where mounting is refused). Two variants need no mount and always
run: the event log's ``os.write`` refused by monkeypatching, and SQLite's own "database or disk is
full" through ``PRAGMA max_page_count``. A store cannot be remounted read-only while it is open (the
kernel refuses with EBUSY while files are open for writing), so the read-only tests reopen the store
on the read-only file system.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import random
import re
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from helpers.fault_check import drop_spec, new_spec, verify
from helpers.fault_writer import Ack, AgentState, StoreSpec, create_agent, load_state, run_turn

from kodestore import Bookmark, KodeStoreError, StorageError, Timeline
from kodestore.extended import ExtendedStore

BACKEND_PARAMS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
DISK_FULL = re.compile(r"disk is full|No space left on device")
PAGE = 4096


class Tmpfs:
    """A tmpfs of ``size`` mounted at ``path`` for one test: filled, freed, made read-only at will."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.filler = path / "filler"

    def __enter__(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        done = _run("mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path))
        if done.returncode != 0:
            pytest.skip(
                f"cannot mount a tmpfs here ({done.stderr.strip()}); the no-mount variants cover this"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if _run("umount", str(self.path)).returncode != 0:
            _run("umount", "-l", str(self.path))

    def fill(self, leave: int = 0) -> None:
        """Take every free byte, then give back ``leave`` bytes (whole pages)."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (b"x" * 65536, b"x" * PAGE):
                with suppress(OSError):
                    while True:
                        os.write(fd, chunk)
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()

    def remount(self, mode: str) -> None:
        done = _run("mount", "-o", f"remount,{mode}", str(self.path))
        assert done.returncode == 0, f"remount {mode}: {done.stderr}"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        return subprocess.CompletedProcess(command, 127, "", str(exc))


async def start(spec: StoreSpec, turns: int = 3) -> tuple[ExtendedStore, AgentState, list[Ack]]:
    """An open store with one agent and ``turns`` acknowledged turns."""
    store = await spec.open()
    acks: list[Ack] = []
    state = await create_agent(store, "agent", acks.append)
    for _ in range(turns):
        await run_turn(store, state, "before", random.Random(0), acks.append)
    return store, state, acks


async def resume(spec: StoreSpec, acks: list[Ack], turns: int = 3) -> None:
    """Reopen, find everything acknowledged, and write ``turns`` more turns successfully."""
    store = await spec.open()
    try:
        await verify(store, acks)
        state = await load_state(store, "agent")
        assert state is not None
        for _ in range(turns):
            await run_turn(store, state, "after", random.Random(1), acks.append)
        await verify(store, acks)
    finally:
        await store.close()


async def go_on(store: ExtendedStore, state: AgentState, acks: list[Ack], turns: int = 3) -> None:
    """The same open store, once writes work again: the runtime's next turns succeed (the turn that
    was refused is saved with them, its messages still being in the in-memory history)."""
    for _ in range(turns):
        await run_turn(store, state, "again", random.Random(6), acks.append)
    await verify(store, acks)


async def turns_until_refused(store: ExtendedStore, state: AgentState, acks: list[Ack]) -> KodeStoreError:
    """Run turns until the store refuses a call; returns the error (any other exception propagates)."""
    rng = random.Random(2)
    for _ in range(500):
        try:
            await run_turn(store, state, "filling", rng, acks.append)
        except KodeStoreError as exc:
            return exc
    raise AssertionError("the store never reported the full disk")


# ---- a full file system ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "leave_pages"),
    [
        *(("sqlite", pages) for pages in (0, 2, 8, 40)),  # refuses save_messages, tool calls, info...
        *(pytest.param("postgres", pages, marks=pytest.mark.postgres) for pages in (0, 8)),  # appends
    ],
)
async def test_full_filesystem_fails_cleanly_and_recovers(
    backend: str, leave_pages: int, tmp_path: Path
) -> None:
    """The store (SQLite database and files, or Postgres's files) on a tmpfs filled to ``leave_pages``
    free pages: turns run until a call is refused; the error is a ``StorageError`` saying the disk
    is full; what was acknowledged is readable on the open store (and by a second opener, if it
    can open); once the filler is deleted the same open store takes new turns, and so does the store
    reopened."""
    with Tmpfs(tmp_path / "fs", "24m") as fs:
        spec = new_spec(backend, fs.path)
        try:
            store, state, acks = await start(spec)
            try:
                fs.fill(leave_pages * PAGE)
                refused = await turns_until_refused(store, state, acks)
                assert isinstance(refused, StorageError) and DISK_FULL.search(str(refused)), repr(refused)
                await verify(store, acks)  # reads work while the disk is full
                if leave_pages == 0:
                    assert not (await store.health_check()).file_system.writable
                with suppress(KodeStoreError):  # opening a full store may be refused, but cleanly
                    second = await spec.open()
                    try:
                        await verify(second, acks)
                    finally:
                        await second.close()
                fs.free()
                await go_on(store, state, acks)
            finally:
                await store.close()
            await resume(spec, acks)
        finally:
            await drop_spec(spec)


async def test_sqlite_database_full_without_mounting(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" (SQLITE_FULL), caused with ``max_page_count``: runs anywhere."""
    spec = new_spec("sqlite", tmp_path)
    store, state, acks = await start(spec)
    try:
        driver: Any = store._records.driver  # the store's own connection: the limit is per connection
        pages = (await _sqlite_pragma(driver, "page_count"))[0]
        await _sqlite_pragma(driver, f"max_page_count = {pages + 2}")
        refused = await turns_until_refused(store, state, acks)
        assert isinstance(refused, StorageError) and DISK_FULL.search(str(refused)), repr(refused)
        await verify(store, acks)
        await _sqlite_pragma(driver, f"max_page_count = {2**30}")  # space returns
        await go_on(store, state, acks)
    finally:
        await store.close()
    await resume(spec, acks)


async def _sqlite_pragma(driver: Any, pragma: str) -> Any:
    from kodestore.db.base import Stmt

    def plan() -> Any:
        return (yield Stmt(f"PRAGMA {pragma}", (), "one"))

    return await driver.run(plan, write=False)


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS, errno.EIO], ids=["ENOSPC", "EROFS", "EIO"])
@pytest.mark.parametrize("backend", BACKEND_PARAMS)
async def test_event_log_write_refused(
    backend: str, failure: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write to the store's JSONL side fails with ``failure`` (monkeypatched ``os.write``, so no
    mount is needed): the turn's first append raises ``StorageError`` with the OS's reason, the
    database half stays consistent with the log, and the next turns succeed once writes do."""
    spec = new_spec(backend, tmp_path)
    files = str(Path(spec.files_dir).resolve())
    real_write = os.write

    def refuse_files(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(files):
            raise OSError(failure, os.strerror(failure))
        return real_write(fd, data)

    try:
        store, state, acks = await start(spec)
        try:
            log = Path(files) / "agent" / "events.jsonl"
            before = log.read_bytes()
            monkeypatch.setattr(os, "write", refuse_files)
            with pytest.raises(StorageError, match=os.strerror(failure)) as caught:
                await run_turn(store, state, "refused", random.Random(3), acks.append)
            assert isinstance(caught.value.__cause__, OSError)
            assert acks[-1]["k"] == "tool_calls", "the database half of the turn was acknowledged"
            with pytest.raises(StorageError, match=os.strerror(failure)):
                await store.save_todos("agent", {"todos": [], "version": 1, "updatedAt": 1})
            assert log.read_bytes() == before
            await verify(store, acks)
            monkeypatch.setattr(os, "write", real_write)
            await go_on(store, state, acks)
        finally:
            await store.close()
        await resume(spec, acks)
    finally:
        await drop_spec(spec)


async def test_save_turn_never_leaves_the_bookmark_past_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``save_turn`` whose event append is refused: nothing of the turn is committed (the events
    go first), so the info's bookmark never points past the log; retried, the turn is saved whole."""
    spec = new_spec("sqlite", tmp_path)
    store, state, _ = await start(spec, turns=1)
    real_write = os.write

    def events_full(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("events.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    try:
        seq = state.seq + 1
        state.info.last_bookmark = Bookmark(seq, 0)
        events = [Timeline(seq, Bookmark(seq, 0), {"channel": "progress", "type": "done"})]
        monkeypatch.setattr(os, "write", events_full)
        with pytest.raises(StorageError, match="No space left"):
            await store.save_turn("agent", messages=state.messages, info=state.info, events=events)
        monkeypatch.setattr(os, "write", real_write)
        report = await store.check_consistency()
        assert report.consistent, report.issues
        saved = await store.load_info("agent")
        assert saved is not None and saved.last_bookmark is not None and saved.last_bookmark.seq == seq - 1
        await store.save_turn("agent", messages=state.messages, info=state.info, events=events)
        assert (await store.check_consistency()).consistent
        assert [e.bookmark.seq async for e in store.read_events("agent", since=seq - 1)] == [seq]
    finally:
        await store.close()


# ---- a read-only store -------------------------------------------------------------------------------


async def test_read_only_store_is_refused_cleanly_and_recovers(tmp_path: Path) -> None:
    """SQLite database and files on a file system remounted read-only: opening the store either fails
    with a ``KodeStoreError`` or opens for reading with every write refused by a ``StorageError``;
    nothing is damaged, and the store works again once the file system is writable."""
    with Tmpfs(tmp_path / "fs", "16m") as fs:
        spec = new_spec("sqlite", fs.path)
        store, state, acks = await start(spec)
        await store.close()  # no file open for writing: the kernel would refuse the remount
        fs.remount("ro")
        try:
            opened = await spec.open()
        except KodeStoreError as exc:
            assert isinstance(exc, StorageError), repr(exc)
        else:
            try:
                await verify(opened, acks)
                with pytest.raises(StorageError):
                    await run_turn(opened, state, "read-only", random.Random(4), acks.append)
            finally:
                await opened.close()
        finally:
            fs.remount("rw")
        await resume(spec, acks)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
async def test_read_only_files_directory(backend: str, tmp_path: Path) -> None:
    """Only the JSONL side read-only (the database is writable): the store opens, reads everything,
    saves to the database, refuses appends with a ``StorageError`` naming the read-only file system,
    reports it in ``health_check``, stays consistent, and appends again once it is writable, without
    being reopened."""
    with Tmpfs(tmp_path / "files-fs", "8m") as fs:
        spec = dataclasses.replace(new_spec(backend, tmp_path), files_dir=str(fs.path / "files"))
        try:
            store, state, acks = await start(spec)
            await store.close()  # no file open for writing: the kernel would refuse the remount
            fs.remount("ro")
            store = await spec.open()
            try:
                await verify(store, acks)
                with pytest.raises(StorageError, match="Read-only file system"):
                    await run_turn(store, state, "read-only", random.Random(5), acks.append)
                assert acks[-1]["k"] == "tool_calls", "the database half was saved"
                health = await store.health_check()
                assert health.database.connected and not health.file_system.writable
                assert "Read-only" in (health.file_system.error or "")
                await verify(store, acks)
                fs.remount("rw")
                await go_on(store, state, acks)
            finally:
                await store.close()
            await resume(spec, acks)
        finally:
            await drop_spec(spec)
