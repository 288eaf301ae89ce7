"""Per-agent exclusive locks: a file lock beside the SQLite database, or a process-local one.

Both wait by polling from the event loop, so a cancelled wait never leaves a lock taken behind it.
"""

from __future__ import annotations

import asyncio
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path

import filelock

from kodestore.errors import LockTimeout

Release = Callable[[], Awaitable[None]]
_POLL_START_S = 0.002
_POLL_MAX_S = 0.05


class AgentLocker(ABC):
    @abstractmethod
    async def try_acquire(self, agent_id: str) -> Release | None:
        """Take the lock now or return ``None``; never waits for another holder."""

    async def acquire(self, agent_id: str, timeout_ms: int) -> Release:
        deadline = time.monotonic() + timeout_ms / 1000
        delay = _POLL_START_S
        while True:
            release = await self.try_acquire(agent_id)
            if release is not None:
                return release
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeout(f"agent {agent_id!r} is locked by another holder ({timeout_ms} ms)")
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX_S)

    async def close(self) -> None:  # noqa: B027 - most lockers hold nothing of their own
        """Free whatever the locker itself holds (held locks stay with their holders)."""


def _once(action: Callable[[], None]) -> Release:
    done = False

    async def release() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return release


class FileAgentLocker(AgentLocker):
    """``flock`` on ``<dir>/<agent_id>.lock``: exclusive across processes, freed when the holder dies."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    async def try_acquire(self, agent_id: str) -> Release | None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # a fresh lock object per acquisition: flock is per open file, so a second acquire by the
        # same process waits like any other holder would (the contract's lock is not re-entrant)
        lock = filelock.FileLock(self.directory / f"{agent_id}.lock", mode=0o600, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        return _once(lock.release)


class LocalAgentLocker(AgentLocker):
    """For stores that live in one process (``MemoryStore``)."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    async def try_acquire(self, agent_id: str) -> Release | None:
        if agent_id in self._held:
            return None
        self._held.add(agent_id)
        return _once(lambda: self._held.discard(agent_id))
