"""The append log and the event log: crash safety, concurrent processes, group commit, the seek index."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from kodestore.errors import StorageError
from kodestore.files.applog import READ_CHUNK, AppendLog, LogCache
from kodestore.files.disk import DiskFiles
from kodestore.files.eventlog import INDEX_INTERVAL, EventLog

pytestmark = pytest.mark.asyncio

REPO = Path(__file__).resolve().parent.parent
WRITER = REPO / "tests" / "helpers" / "append_writer.py"


def timeline(seq: int, channel: str = "progress", pad: int = 0) -> dict[str, Any]:
    return {
        "cursor": seq,
        "bookmark": {"seq": seq, "timestamp": 1_700_000_000_000 + seq},
        "event": {"channel": channel, "type": "text", "pad": "x" * pad},
    }


def spawn_writer(base: Path, agent: str, first: int, count: int, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(WRITER), str(base), agent, str(first), str(count), *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def file_seqs(path: Path) -> list[int]:
    """Every line of a log parsed by hand: fails on a torn, glued or corrupt line."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [orjson.loads(line)["bookmark"]["seq"] for line in raw.split(b"\n")[:-1]]


async def seqs_of(log: EventLog, since: int | None = None, channel: str | None = None) -> list[int]:
    return [event["bookmark"]["seq"] async for event in log.read(since, channel)]


async def assert_since_reads_match(log: EventLog, seqs: list[int], samples: list[int]) -> None:
    for since in samples:
        assert await seqs_of(log, since) == [s for s in seqs if s > since], f"since={since}"


# ---- basics ----------------------------------------------------------------------------------------


async def test_round_trip_with_since_and_channel(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "a")
    events = [timeline(seq, ("progress", "control", "monitor")[seq % 3]) for seq in range(1, 31)]
    events[4]["event"]["text"] = "line\nbreak \x00 nul \r\n 😀 \u2028"
    for event in events:
        await log.append(event)
    assert [e async for e in log.read(None, None)] == events
    assert await seqs_of(log, 25) == [26, 27, 28, 29, 30]
    assert await seqs_of(log, 20, "control") == [22, 25, 28]
    assert len((tmp_path / "a" / "events.jsonl").read_bytes().split(b"\n")) == 31  # one line each


async def test_reads_of_a_missing_log_create_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "nobody")
    assert await seqs_of(log) == []
    assert await seqs_of(log, 5) == []
    report = await log.inspect()
    assert (report.lines, report.max_seq, report.torn_tail) == (0, None, False)
    assert not (tmp_path / "nobody").exists()


async def test_corrupt_line_is_skipped_with_a_warning_and_hides_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog(tmp_path / "a")
    await log.append(timeline(1))
    offset = log.log.path.stat().st_size
    with log.log.path.open("ab") as f:
        f.write(b'{"not": "a timeline"}\n{broken json\n')
    await log.append(timeline(2))
    await log.append(timeline(2))
    with caplog.at_level(logging.WARNING, logger="kodestore"):
        assert await seqs_of(log) == [1, 2, 2]
    assert f"{log.log.path}: skipped a corrupt line at byte {offset}" in caplog.text
    report = await log.inspect()
    assert report.corrupt_lines == [2, 3]
    assert report.duplicate_seqs == [2]
    assert (report.lines, report.max_seq, report.torn_tail) == (5, 2, False)


# ---- torn tails -----------------------------------------------------------------------------------


@pytest.mark.parametrize("before", [[1, 2, 3], []])
async def test_torn_tail_is_quarantined_and_never_glued(tmp_path: Path, before: list[int]) -> None:
    log = EventLog(tmp_path / "a")
    for seq in before:
        await log.append(timeline(seq))
    torn = b'{"cursor":9,"bookmark":{"seq":9,"timest'
    log.log.path.parent.mkdir(exist_ok=True)
    with log.log.path.open("ab") as f:
        f.write(torn)
    assert await seqs_of(log) == before  # a half line is never yielded
    assert (await log.inspect()).torn_tail
    await log.append(timeline(4))
    assert (tmp_path / "a" / "events.quarantine").read_bytes() == torn + b"\n"
    assert file_seqs(log.log.path) == [*before, 4]
    report = await log.inspect()
    assert (report.lines, report.torn_tail, report.corrupt_lines) == (len(before) + 1, False, [])


@pytest.mark.parametrize(
    ("durability", "pad", "max_acks"),
    [("os", 60, 3000), ("os", 400_000, 40), ("fsync", 60, 300)],
    ids=["small", "large-lines", "fsync"],
)
async def test_sigkill_loses_no_acknowledged_event(
    tmp_path: Path, durability: str, pad: int, max_acks: int
) -> None:
    # large lines make the kill land inside a write now and then, leaving a torn tail
    proc = spawn_writer(
        tmp_path, "a", 0, 10**9, "--durability", durability, "--pad", str(pad), "--random-pad"
    )
    assert proc.stdout is not None
    target = random.randint(5, max_acks)
    acknowledged: list[int] = []
    for line in proc.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= target:
            break
    proc.kill()
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    acknowledged += [int(word) for word in rest.split()]

    files = DiskFiles(tmp_path)
    seqs = [event["bookmark"]["seq"] async for event in files.read_events("a", None, None)]
    assert set(acknowledged) <= set(seqs)
    assert seqs == list(range(len(seqs)))  # one writer: all in order, none twice, none corrupt
    torn = (await files.inspect_events("a")).torn_tail
    await files.append_events("a", timeline(len(seqs)))
    report = await files.inspect_events("a")
    assert (report.lines, report.torn_tail, report.corrupt_lines, report.duplicate_seqs) == (
        len(seqs) + 1,
        False,
        [],
        [],
    )
    assert (tmp_path / "a" / "events.quarantine").exists() == torn
    await files.close()


# ---- concurrent processes -------------------------------------------------------------------------


async def test_four_processes_append_to_the_same_log(tmp_path: Path) -> None:
    # interleaved seq ranges (w, w+4, w+8, ...): the log's seqs are not monotonic
    procs = [spawn_writer(tmp_path, "shared", w, 2000, "--step", "4", "--pad", "80") for w in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    seqs = file_seqs(tmp_path / "shared" / "events.jsonl")
    assert len(seqs) == 8000
    assert sorted(seqs) == list(range(8000))
    for w in range(4):  # each writer's events stay in its order
        mine = [s for s in seqs if s % 4 == w]
        assert mine == sorted(mine)
    log = EventLog(tmp_path / "shared")
    report = await log.inspect()
    assert (report.lines, report.max_seq, report.torn_tail) == (8000, 7999, False)
    assert (report.corrupt_lines, report.duplicate_seqs) == ([], [])
    assert (tmp_path / "shared" / "events.idx").stat().st_size >= 16  # indexed by several processes
    await assert_since_reads_match(log, seqs, [-1, 0, 7, 1000, 3999, 6000, 7990, 7999])


async def test_four_processes_on_different_agents(tmp_path: Path) -> None:
    procs = [spawn_writer(tmp_path, f"agent-{w}", 0, 2000) for w in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    files = DiskFiles(tmp_path)
    assert await files.agent_ids() == [f"agent-{w}" for w in range(4)]
    for w in range(4):
        assert file_seqs(tmp_path / f"agent-{w}" / "events.jsonl") == list(range(2000))
        report = await files.inspect_events(f"agent-{w}")
        assert (report.lines, report.corrupt_lines, report.duplicate_seqs) == (2000, [], [])


# ---- fsync ---------------------------------------------------------------------------------------


async def test_fsync_group_commit_batches_concurrent_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    files = DiskFiles(tmp_path, "fsync")
    await asyncio.gather(*(files.append_events("a", timeline(seq)) for seq in range(50)))
    assert 1 <= fsyncs <= 5
    await files.append_events("a", timeline(50))
    assert fsyncs <= 6  # a lone append is fsynced too
    assert file_seqs(tmp_path / "a" / "events.jsonl") == list(range(51))
    await files.close()


async def test_fsync_and_os_durability_write_identical_logs(tmp_path: Path) -> None:
    for durability in ("os", "fsync"):
        files = DiskFiles(tmp_path / durability, durability)
        for start in range(0, 300, 30):
            await asyncio.gather(
                *(files.append_events("a", timeline(s, pad=200)) for s in range(start, start + 30))
            )
        await files.close()
    os_log, fsync_log = (tmp_path / d / "a" / "events.jsonl" for d in ("os", "fsync"))
    assert os_log.read_bytes() == fsync_log.read_bytes()
    assert (tmp_path / "os/a/events.idx").read_bytes() == (tmp_path / "fsync/a/events.idx").read_bytes()


async def test_close_waits_for_queued_fsync_batches(tmp_path: Path) -> None:
    files = DiskFiles(tmp_path, "fsync")
    tasks = [asyncio.create_task(files.append_events("a", timeline(seq))) for seq in range(20)]
    await asyncio.sleep(0)
    await files.close()
    await asyncio.gather(*tasks)
    assert file_seqs(tmp_path / "a" / "events.jsonl") == list(range(20))


# ---- the seek index ------------------------------------------------------------------------------


async def test_since_read_touches_one_index_block(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "a")
    total = 200_000
    for seq in range(total):
        await log.append(timeline(seq))
    size = log.log.path.stat().st_size
    assert size > 100 * INDEX_INTERVAL

    before = log.log.bytes_read
    assert await seqs_of(log, total - 11) == list(range(total - 10, total))
    assert log.log.bytes_read - before <= 2 * INDEX_INTERVAL

    before = log.log.bytes_read  # the counter does see a full read
    assert len(await seqs_of(log, None)) == total
    assert log.log.bytes_read - before == size


async def test_a_since_read_of_the_tail_takes_four_thread_hops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hop to a thread costs more than reading a chunk from the page cache: a read of a log's
    tail looks up the index, then opens the file at the offset, reads once (a short chunk is the
    end) and closes it; a longer read adds one hop per chunk."""
    log = EventLog(tmp_path / "a")
    for seq in range(3000):
        await log.append(timeline(seq, pad=100))
    assert log.log.path.stat().st_size > 2 * INDEX_INTERVAL
    loop = asyncio.get_running_loop()
    hops = 0
    run_in_executor = loop.run_in_executor

    def counted(*args: Any) -> Any:
        nonlocal hops
        hops += 1
        return run_in_executor(*args)

    monkeypatch.setattr(loop, "run_in_executor", counted)
    assert await seqs_of(log, 2989) == list(range(2990, 3000))
    assert hops == 4
    hops = 0
    assert len(await seqs_of(log, None)) == 3000  # no index lookup; open, every chunk, close
    assert hops == 2 + log.log.path.stat().st_size // READ_CHUNK + 1


async def test_index_with_non_monotonic_seqs(tmp_path: Path) -> None:
    rng = random.Random(7)
    seqs = [i + rng.randint(-3000, 3000) for i in range(12_000)]
    log = EventLog(tmp_path / "a")
    for seq in seqs:
        await log.append(timeline(seq, pad=60))
    assert (tmp_path / "a" / "events.idx").stat().st_size >= 10 * 16
    await assert_since_reads_match(
        log, seqs, [-5000, -1, 0, 1, 500, 3000, 6000, 8999, 11_000, 14_999, 20_000]
    )


async def test_index_with_two_interleaving_writers(tmp_path: Path) -> None:
    # two EventLogs on one file act like two processes: each must read back what the other wrote
    rng = random.Random(11)
    writers = [EventLog(tmp_path / "a"), EventLog(tmp_path / "a")]
    next_seq = [0, 1]
    seqs: list[int] = []
    while len(seqs) < 12_000:
        w = rng.randrange(2)
        for _ in range(rng.randint(1, 300)):
            seqs.append(next_seq[w])
            await writers[w].append(timeline(next_seq[w], pad=60))
            next_seq[w] += 2 + w * rng.randrange(2)  # the second writer falls behind now and then
    assert file_seqs(tmp_path / "a" / "events.jsonl") == seqs
    reader = EventLog(tmp_path / "a")
    await assert_since_reads_match(reader, seqs, [*sorted(rng.sample(seqs, 25)), -1, max(seqs)])


async def _write_indexed_log(directory: Path, count: int = 6000) -> tuple[EventLog, list[int]]:
    log = EventLog(directory)
    for seq in range(count):
        await log.append(timeline(seq, pad=60))
    return log, list(range(count))


async def test_reads_stay_correct_without_index_and_the_index_is_rebuilt(tmp_path: Path) -> None:
    log, seqs = await _write_indexed_log(tmp_path / "a")
    log.index_path.unlink()
    await assert_since_reads_match(log, seqs, [-1, 100, 3000, 5990])
    size = log.log.path.stat().st_size
    for seq in range(6000, 7000):
        await log.append(timeline(seq, pad=60))
        seqs.append(seq)
    assert log.index_path.stat().st_size >= 16 * (size // INDEX_INTERVAL)  # rebuilt to full density
    before = log.log.bytes_read
    await assert_since_reads_match(log, seqs, [6990])
    assert log.log.bytes_read - before <= 2 * INDEX_INTERVAL


async def test_a_new_log_empties_a_stale_index_and_never_creates_one(tmp_path: Path) -> None:
    log, _ = await _write_indexed_log(tmp_path / "a")
    assert log.index_path.stat().st_size > 0
    log.log.path.unlink()  # the log goes, its index stays behind
    await log.append(timeline(0))
    assert log.index_path.stat().st_size == 0
    assert await seqs_of(log, -1) == [0]

    fresh = EventLog(tmp_path / "b")
    await fresh.append(timeline(0))
    assert not fresh.index_path.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "mid-line", "past-eof"])
async def test_reads_stay_correct_with_a_damaged_index(tmp_path: Path, damage: str) -> None:
    log, seqs = await _write_indexed_log(tmp_path / "a")
    raw = log.index_path.read_bytes()
    if damage == "truncated":
        log.index_path.write_bytes(raw[:-5])
    elif damage == "garbage":
        log.index_path.write_bytes(random.Random(3).randbytes(len(raw)))
    elif damage == "mid-line":  # a record claiming nothing before it, one byte into a line
        log.index_path.write_bytes(struct.pack("<Qq", INDEX_INTERVAL + 1, -1))
    else:
        log.index_path.write_bytes(raw + struct.pack("<Qq", 10**12, -1))
    await assert_since_reads_match(log, seqs, [-1, 0, 1000, 4000, 5998])
    for seq in range(6000, 7500):  # appending repairs or extends the index without harm
        await log.append(timeline(seq, pad=60))
        seqs.append(seq)
    assert log.index_path.stat().st_size % 16 == 0
    await assert_since_reads_match(log, seqs, [-1, 3000, 7000, 7490])


# ---- failures --------------------------------------------------------------------------------------


async def test_disk_full_raises_storage_error_and_leaves_the_log_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = DiskFiles(tmp_path)
    for seq in range(3):
        await files.append_events("a", timeline(seq))
    path = tmp_path / "a" / "events.jsonl"
    before = path.read_bytes()
    real_write = os.write

    def disk_full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StorageError, match="No space left on device") as caught:
        await files.append_events("a", timeline(3))
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC
    assert path.read_bytes() == before

    calls = 0

    def fills_up_midway(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            return real_write(fd, bytes(data)[:7])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", fills_up_midway)
    with pytest.raises(StorageError):
        await files.append_events("a", timeline(3))
    assert calls == 2 and path.read_bytes() == before  # the partial line was cut off again

    monkeypatch.setattr(os, "write", real_write)  # space returns
    await files.append_events("a", timeline(3))
    assert file_seqs(path) == [0, 1, 2, 3]
    assert not (tmp_path / "a" / "events.quarantine").exists()
    await files.close()


async def test_read_only_directory_raises_storage_error(tmp_path: Path) -> None:
    files = DiskFiles(tmp_path)
    await files.append_events("a", timeline(0))
    await files.close()  # no cached descriptor: the next append must open the file
    (tmp_path / "a" / "events.jsonl").chmod(0o400)
    (tmp_path / "a").chmod(0o500)
    try:
        if os.access(tmp_path / "a" / "events.jsonl", os.W_OK):
            pytest.skip("permissions do not apply (running as root)")
        with pytest.raises(StorageError, match="cannot open"):
            await files.append_events("a", timeline(1))
    finally:
        (tmp_path / "a").chmod(0o700)
        (tmp_path / "a" / "events.jsonl").chmod(0o600)


async def test_a_log_deleted_by_someone_else_is_recreated(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "a")
    await log.append(timeline(1))
    log.log.path.unlink()  # the cached descriptor now points at a deleted file
    await log.append(timeline(2))
    assert file_seqs(log.log.path) == [2]


async def test_open_descriptors_are_bounded(tmp_path: Path) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    cache = LogCache(lambda path: AppendLog(path), max_open=4)
    before = open_fds()
    for i in range(12):
        await cache.get(tmp_path / f"{i}.jsonl").append([b"{}"])
        assert open_fds() - before <= 4
    await cache.get(tmp_path / "0.jsonl").append([b"[]"])  # evicted earlier: reopens
    assert (tmp_path / "0.jsonl").read_bytes() == b"{}\n[]\n"
    await cache.close()
    assert open_fds() == before


class FakeLog:
    def __init__(self) -> None:
        self.busy = False
        self.closed = False

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.close()


async def test_eviction_closes_the_oldest_idle_log_and_spares_busy_ones(tmp_path: Path) -> None:
    cache = LogCache(lambda path: FakeLog(), max_open=2)
    a, b = cache.get(tmp_path / "a"), cache.get(tmp_path / "b")
    a.busy = True
    c = cache.get(tmp_path / "c")  # a is older but busy: b goes
    assert (a.closed, b.closed, c.closed) == (False, True, False)
    a.busy = False
    assert cache.get(tmp_path / "a") is a  # now the most recently used
    cache.get(tmp_path / "d")
    assert (a.closed, c.closed) == (False, True)
    await cache.close()
    assert a.closed


async def test_a_partial_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = 0

    def short_first(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, bytes(data)[:7] if calls == 1 else data)

    log = EventLog(tmp_path / "a")
    monkeypatch.setattr(os, "write", short_first)
    await log.append(timeline(0), timeline(1))
    monkeypatch.setattr(os, "write", real_write)
    assert calls == 2 and file_seqs(log.log.path) == [0, 1]


async def test_a_line_with_a_newline_is_refused(tmp_path: Path) -> None:
    log = AppendLog(tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="newline"):
        await log.append([b"{}", b"a\nb"])
    with pytest.raises(ValueError, match="newline"):
        await log.append([b"{}\n"])
    assert not log.path.exists()
    await log.append([b"{}", b"[]"])
    assert log.path.read_bytes() == b"{}\n[]\n"
    await log.aclose()
