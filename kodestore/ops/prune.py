"""``prune``: retention by age and by count, safe to run from several workers at once.

An agent is pruned when it is older than ``older_than`` (by its last update) and, with
``keep_latest=N``, is not among the N most recently updated agents of its template. Candidates are
found by paging ``query_sessions`` (no full table in memory), then deleted in batches through
``store.delete``, which removes the database rows, the logs and the media cache together.

Each deletion takes the agent's lock with a short timeout and re-reads the agent first: an agent
locked by a live runtime, updated since it was found, or already deleted by another worker is
skipped. Deletes are idempotent, so concurrent prunes cannot fail each other.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from kodestore.errors import KodeStoreError, LockTimeout
from kodestore.extended import ExtendedStore, QueryableStore
from kodestore.facade import Store
from kodestore.models import SessionInfo
from kodestore.ops.migrate import Progress
from kodestore.validation import check_limit, now_ms, to_epoch_ms

LOCK_TIMEOUT_MS = 200


def cutoff_ms(older_than: timedelta | datetime | int | None) -> int | None:
    """Epoch ms before which an update counts as old: ``now - timedelta``, or the datetime / ms given."""
    if older_than is None:
        return None
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValueError("older_than must not be negative")
        return now_ms() - int(older_than.total_seconds() * 1000)
    return to_epoch_ms(older_than, "older_than")


async def _sessions(
    store: QueryableStore, template_id: str | None, order: str, batch_size: int
) -> AsyncIterator[SessionInfo]:
    offset = 0
    while True:
        page = await store.query_sessions(
            template_id=template_id, sort_by="updated_at", sort_order=order, limit=batch_size, offset=offset
        )
        for session in page:
            yield session
        if len(page) < batch_size:
            return
        offset += len(page)


async def _candidates(
    store: QueryableStore,
    cutoff: int | None,
    keep_latest: int | None,
    template_id: str | None,
    batch_size: int,
) -> list[SessionInfo]:
    """Sessions to prune, oldest first."""
    found: list[SessionInfo] = []
    if keep_latest is None:
        async for session in _sessions(store, template_id, "asc", batch_size):
            if cutoff is not None and session.updated_at >= cutoff:
                break  # ascending: everything after is newer
            found.append(session)
        return found
    ranks: Counter[str] = Counter()
    async for session in _sessions(store, template_id, "desc", batch_size):
        ranks[session.template_id] += 1
        if ranks[session.template_id] > keep_latest and (cutoff is None or session.updated_at < cutoff):
            found.append(session)
    found.reverse()
    return found


async def _delete_unless_busy(store: QueryableStore, found: SessionInfo) -> bool:
    """Delete the agent if it is unlocked and unchanged since it was found; True when deleted here."""
    release = None
    if isinstance(store, ExtendedStore):
        try:
            release = await store.acquire_agent_lock(found.agent_id, timeout_ms=LOCK_TIMEOUT_MS)
        except LockTimeout:
            return False  # a live runtime (or another pruner) holds it
    try:
        current = await store.query_sessions(agent_id=found.agent_id, limit=1)
        if not current or current[0].updated_at != found.updated_at:
            return False  # deleted by another worker, or in use again
        await store.delete(found.agent_id)
        return True
    finally:
        if release is not None:
            await release()


async def prune(
    store: Store,
    *,
    older_than: timedelta | datetime | int | None = None,
    keep_latest: int | None = None,
    template_id: str | None = None,
    dry_run: bool = False,
    batch_size: int = 100,
    progress: Progress | None = None,
) -> list[str]:
    """Delete agents whose last update is older than ``older_than`` (a timedelta before now, or a
    datetime / epoch ms), keeping the ``keep_latest`` newest per template; returns the ids deleted
    (with ``dry_run``, the ids that would be, and nothing is deleted). Needs a queryable store.
    """
    if not isinstance(store, QueryableStore):
        raise KodeStoreError(
            f"prune needs a queryable store (sqlite, postgres, memory), not {type(store).__name__}"
        )
    if older_than is None and keep_latest is None:
        raise ValueError("prune needs older_than, keep_latest or both")
    if keep_latest is not None:
        check_limit(keep_latest, "keep_latest")
    if check_limit(batch_size, "batch_size") == 0:
        raise ValueError("batch_size must be at least 1")
    cutoff = cutoff_ms(older_than)
    found = await _candidates(store, cutoff, keep_latest, template_id, batch_size)
    if dry_run:
        return [session.agent_id for session in found]
    deleted: list[str] = []
    for start in range(0, len(found), batch_size):
        for session in found[start : start + batch_size]:
            if await _delete_unless_busy(store, session):
                deleted.append(session.agent_id)
        if progress is not None:
            progress(min(start + batch_size, len(found)), len(found))
        await asyncio.sleep(0)  # let the runtimes sharing this loop breathe between batches
    return deleted
