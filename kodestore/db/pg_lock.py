"""Agent locks as Postgres session-level advisory locks: exclusive across processes and hosts.

All locks of one store live on one dedicated autocommit connection (the *lock session*), outside the
pool: a held lock pins no pooled connection and no open transaction, and however many agents a process
locks it costs one server connection. The server frees a session's locks when the session ends, so a
holder that dies (process killed, host gone) frees them; nothing expires while the holder lives.
Session locks are re-entrant, the contract's lock is not: the store tracks the keys it holds.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from functools import partial
from typing import LiteralString

import psycopg

from kodestore.db.pg_dialect import advisory_key
from kodestore.db.pg_driver import Connection, PostgresDriver
from kodestore.errors import LockLost
from kodestore.locks import AgentLocker, Release

logger = logging.getLogger("kodestore.postgres")

_TRY_LOCK: LiteralString = "SELECT pg_try_advisory_lock(%s)"
_UNLOCK: LiteralString = "SELECT pg_advisory_unlock(%s)"


class AdvisoryAgentLocker(AgentLocker):
    """``pg_try_advisory_lock(blake2b(schema, agent_id))``, polled by ``AgentLocker.acquire``."""

    def __init__(self, driver: PostgresDriver) -> None:
        self._driver = driver
        self._schema = driver.options.schema
        self._session: Connection | None = None
        self._mutex = asyncio.Lock()  # one statement at a time on the session, and one reconnect
        self._reserved: set[int] = set()  # keys this store holds or is trying right now
        self._background: set[asyncio.Task[None]] = set()

    def key(self, agent_id: str) -> int:
        return advisory_key(self._schema, agent_id)

    async def try_acquire(self, agent_id: str) -> Release | None:
        key = self.key(agent_id)
        if key in self._reserved:
            return None  # this store holds it: wait like any other holder would
        self._reserved.add(key)
        attempt = asyncio.ensure_future(self._lock(key))
        try:
            # shielded: a waiter cancelled mid-query must not leave a lock behind that nobody holds
            acquired = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(partial(self._release_abandoned, key))
            raise
        return self._release_function(key) if acquired else None

    async def _lock(self, key: int) -> bool:
        acquired = False
        try:
            acquired = await self._query(_TRY_LOCK, key)
        finally:
            if not acquired:
                self._reserved.discard(key)
        return acquired

    def _release_function(self, key: int) -> Release:
        released = False

        async def release() -> None:
            nonlocal released
            if not released:
                released = True
                await asyncio.shield(self._unlock(key))

        return release

    async def _unlock(self, key: int) -> None:
        """Unlock; ``LockLost`` when the server had already freed the lock (its session ended)."""
        try:
            held = self._session is not None and await self._query(_UNLOCK, key, reconnect=False)
        finally:
            self._reserved.discard(key)
        if not held:
            raise LockLost(
                "the agent lock was lost before release: its Postgres session ended, so another"
                " holder may have written the agent meanwhile"
            )

    def _release_abandoned(self, key: int, attempt: asyncio.Future[bool]) -> None:
        if attempt.cancelled() or attempt.exception() is not None or not attempt.result():
            return
        task = asyncio.ensure_future(self._unlock_quietly(key))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _unlock_quietly(self, key: int) -> None:
        with suppress(LockLost):  # nobody held this one: losing it tells nobody anything
            await self._unlock(key)

    async def _query(self, query: LiteralString, key: int, *, reconnect: bool = True) -> bool:
        """Run a lock function on the session; a session the server killed is replaced once."""
        async with self._mutex:
            for _ in range(2):
                session, fresh = self._session, False
                if session is None or session.closed:
                    if not reconnect:
                        return False  # the session is gone, and with it every lock it held
                    session, fresh = await self._connect(), True
                    self._session = session
                try:
                    row = await (await session.execute(query, (key,))).fetchone()
                    return bool(row and row[0])
                except psycopg.Error as exc:
                    if fresh or not session.broken:
                        raise self._driver.translate_error(exc) from exc
                    await self._lost(session)
                    if not reconnect:
                        return False
            raise AssertionError("a fresh session either answers or raises")

    async def _connect(self) -> Connection:
        try:
            return await self._driver.connect(autocommit=True)
        except psycopg.Error as exc:
            raise self._driver.translate_error(exc) from exc

    async def _lost(self, session: Connection) -> None:
        self._session = None
        await session.close()
        if self._reserved:
            logger.warning(
                "postgres lock session lost; the server released the %d agent lock(s) it held",
                len(self._reserved),
            )

    async def close(self) -> None:
        """Ends the lock session, which frees every lock this store still holds."""
        async with self._mutex:
            session, self._session = self._session, None
            self._reserved.clear()
            if session is not None:
                await session.close()
