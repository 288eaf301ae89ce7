"""``kodestore events --follow``: tail a live event log by polling from the last seq seen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from kodestore.facade import Store
from kodestore.models import Timeline

POLL_INTERVAL_S = 0.5


async def follow_events(
    store: Store, agent_id: str, since: int | None, channel: str | None, follow: bool
) -> AsyncGenerator[Timeline, None]:
    """Yield events after ``since``; with ``follow``, keep yielding new ones until cancelled.

    Each poll resumes from the highest seq seen, which the log's seek index makes cheap."""
    last = since
    while True:
        async with aclosing(store.read_events(agent_id, since=last, channel=channel)) as events:
            async for timeline in events:
                last = timeline.bookmark.seq if last is None else max(last, timeline.bookmark.seq)
                yield timeline
        if not follow:
            return
        await asyncio.sleep(POLL_INTERVAL_S)
