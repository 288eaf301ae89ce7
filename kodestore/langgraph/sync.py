"""The sync half of ``KodeCheckpointSaver``: LangGraph's sync API, run on the store's event loop.

A store lives on the event loop that opened it (a Postgres pool cannot be used from another loop), so
``graph.invoke`` and the other sync paths hand each call to that loop from their own thread and wait
for it, as LangGraph's own async savers do. Called on that loop itself the wait would deadlock, so
they raise instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

if TYPE_CHECKING:
    _Base = BaseCheckpointSaver[str]
else:
    _Base = object

T = TypeVar("T")


async def _next(items: AsyncIterator[T]) -> T:
    return await anext(items)


class SyncMethods(_Base):
    """Each sync method of ``BaseCheckpointSaver`` as its async twin, run on ``self.loop``."""

    loop: asyncio.AbstractEventLoop | None

    def _sync(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = self.loop
        if loop is None:
            raise RuntimeError(
                "KodeCheckpointSaver was created outside an event loop: pass loop= (the loop the store"
                " was opened on) to use the sync methods"
            )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise asyncio.InvalidStateError(
                "Synchronous calls to KodeCheckpointSaver are only allowed from a thread other than the"
                " store's event loop. From the loop, use the async interface, e.g."
                " `await checkpointer.aget_tuple(...)` or `await graph.ainvoke(...)`."
            )
        if not loop.is_running():
            raise RuntimeError("the store's event loop is not running: the sync methods run on it")
        return asyncio.run_coroutine_threadsafe(call(), loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(lambda: self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        generator = self.alist(config, filter=filter, before=before, limit=limit)
        items = cast(AsyncGenerator[CheckpointTuple, None], generator)  # an async generator function
        try:
            while True:
                try:
                    yield self._sync(lambda: _next(items))
                except StopAsyncIteration:
                    return
        finally:
            self._sync(items.aclose)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(lambda: self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(lambda: self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(lambda: self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(lambda: self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(lambda: self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(lambda: self.aprune(thread_ids, strategy=strategy))
