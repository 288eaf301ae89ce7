"""``KodeCheckpointSaver``: LangGraph's ``BaseCheckpointSaver`` over an open kodestore SQL store.

LangGraph checkpoints then share the store's database, backup, retention and session queries: a
thread is an agent (created on its first checkpoint), so ``query_sessions`` lists it and
``store.delete`` / ``ops.prune`` remove it with its checkpoints. The SQL lives in ``plans`` and
``maintenance`` and runs through the store's own driver, so SQLite, Postgres and the in-memory store
share one implementation. The async methods here are the real ones; ``sync`` runs them for
LangGraph's sync API.
"""

from __future__ import annotations

import asyncio
import builtins
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from kodestore.db.base import Plan
from kodestore.db.records import SqlRecords
from kodestore.extended import QueryableStore
from kodestore.jsonutil import dumps, loads
from kodestore.langgraph.maintenance import (
    copy_thread_plan,
    delete_runs_plan,
    delete_thread_plan,
    prune_plan,
)
from kodestore.langgraph.plans import (
    EMPTY,
    BlobRow,
    CheckpointKey,
    CheckpointQuery,
    CheckpointRow,
    StoredCheckpoint,
    WriteRow,
    put_checkpoint_plan,
    put_writes_plan,
    read_checkpoints_plan,
)
from kodestore.langgraph.sync import SyncMethods
from kodestore.metrics import OperationKind
from kodestore.validation import now_ms, validate_agent_id

T = TypeVar("T")

PAGE_SIZE = 100
"""Checkpoints read per transaction while ``alist`` streams."""
PRUNE_STRATEGIES = ("keep_latest", "delete")


def _thread_id(value: object) -> str:
    """A thread id is an agent id (LangGraph also accepts ints and UUIDs: they become strings)."""
    if value is None:
        raise ValueError("config['configurable']['thread_id'] is required")
    return validate_agent_id(value if isinstance(value, str) else str(value))


def _ids(values: Sequence[str], name: str) -> builtins.list[str]:
    """A list of ids; a lone string is refused, not taken for the list of its characters."""
    if isinstance(values, str):
        raise ValueError(f"{name} must be a sequence of ids, not a string")
    return [str(value) for value in values]


def _config(key: CheckpointKey) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": key.thread_id,
            "checkpoint_ns": key.checkpoint_ns,
            "checkpoint_id": key.checkpoint_id,
        }
    }


class KodeCheckpointSaver(SyncMethods, BaseCheckpointSaver[str]):
    """LangGraph checkpoints in a SQLite, Postgres or memory kodestore store.

    ``store`` must be open; the caller owns it and closes it after the saver's last use. Create the
    saver on the event loop that opened the store (or pass ``loop=``): the sync methods run there.

    Beyond the required methods it implements LangGraph's optional ones: ``copy_thread`` (recorded
    as a fork in the agent lineage), ``delete_for_runs`` and ``prune``.
    """

    def __init__(
        self,
        store: QueryableStore,
        *,
        serde: SerializerProtocol | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(serde=serde)
        records = getattr(store, "_records", None)
        if not isinstance(records, SqlRecords):
            raise TypeError(
                "KodeCheckpointSaver needs a SQL-backed store (SqliteStore, PostgresStore or MemoryStore),"
                f" not {type(store).__name__}"
            )
        store._ensure_open()
        self.store = store
        self._driver = records.driver
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None  # async use needs none; the sync methods ask for it
        self.loop = loop

    def __repr__(self) -> str:
        return f"<KodeCheckpointSaver {self.store!r}>"

    async def _run(self, kind: OperationKind, plan: Callable[[], Plan[T]], *, write: bool) -> T:
        """One transaction on the store's driver, counted in the store's metrics."""
        self.store._ensure_open()
        started = time.perf_counter()
        try:
            return await self._driver.run(plan, write=write)
        finally:
            self.store.metrics.record(kind, (time.perf_counter() - started) * 1000)

    # ---- reading ---------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``checkpoint_id`` names, or the thread namespace's newest; None if absent."""
        configurable = config.get("configurable", {})
        query = CheckpointQuery(
            thread_id=_thread_id(configurable.get("thread_id")),
            checkpoint_ns=configurable.get("checkpoint_ns", ""),
            checkpoint_id=get_checkpoint_id(config),
        )
        found = await self._read(query, None, 1)
        return self._tuple(found[0]) if found else None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first: of ``config``'s thread (and namespace, if it names one), or of
        every thread when ``config`` is None. ``filter`` keeps those whose metadata has each key with
        an equal value; ``before`` those older than its checkpoint. Streams in pages of
        ``PAGE_SIZE``, each page one transaction."""
        configurable = (config or {}).get("configurable", {})
        thread = configurable.get("thread_id")
        query = CheckpointQuery(
            thread_id=None if thread is None else _thread_id(thread),
            checkpoint_ns=configurable.get("checkpoint_ns"),
            checkpoint_id=configurable.get("checkpoint_id"),
            before_id=None if before is None else get_checkpoint_id(before),
            metadata=dumps(filter, "filter").decode() if filter else None,
        )
        remaining = limit
        after: CheckpointKey | None = None
        while remaining is None or remaining > 0:
            size = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            page = await self._read(query, after, size)
            for stored in page:
                yield self._tuple(stored)
            if len(page) < size:
                return
            after = page[-1].key
            if remaining is not None:
                remaining -= len(page)

    async def _read(
        self, query: CheckpointQuery, after: CheckpointKey | None, limit: int
    ) -> builtins.list[StoredCheckpoint]:
        plan = partial(read_checkpoints_plan, self._driver.dialect, query, after, limit)
        return await self._run("loads", plan, write=False)

    def _tuple(self, stored: StoredCheckpoint) -> CheckpointTuple:
        checkpoint: Checkpoint = self.serde.loads_typed(stored.checkpoint)
        checkpoint["channel_values"] = {ch: self.serde.loads_typed(v) for ch, v in stored.values.items()}
        key = stored.key
        return CheckpointTuple(
            config=_config(key),
            checkpoint=checkpoint,
            metadata=loads(stored.metadata),
            parent_config=None
            if stored.parent_id is None
            else _config(key._replace(checkpoint_id=stored.parent_id)),
            pending_writes=[(task, ch, self.serde.loads_typed(v)) for task, ch, v in stored.writes],
        )

    # ---- writing ---------------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint; only channels in ``new_versions`` get a blob, the others keep the one
        an earlier checkpoint stored for their version."""
        configurable = config["configurable"]
        thread = configurable.get("thread_id")
        key = CheckpointKey(_thread_id(thread), configurable.get("checkpoint_ns", ""), checkpoint["id"])
        body: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = body.pop("channel_values", None) or {}
        blobs = [
            BlobRow(channel, str(version), *self.serde.dumps_typed(values[channel]))
            if channel in values
            else BlobRow(channel, str(version), EMPTY, None)
            for channel, version in new_versions.items()
        ]
        stored_metadata = get_serializable_checkpoint_metadata(config, metadata)
        run_id = stored_metadata.get("run_id")
        row = CheckpointRow(
            key=key,
            parent_id=configurable.get("checkpoint_id"),
            run_id=None if run_id is None else str(run_id),
            checkpoint=self.serde.dumps_typed(body),
            metadata=dumps(stored_metadata, "metadata").decode(),
            channels={ch: str(version) for ch, version in checkpoint["channel_versions"].items()},
            blobs=blobs,
        )
        await self._run("saves", partial(put_checkpoint_plan, row, now_ms()), write=True)
        return {
            "configurable": {
                "thread_id": thread,
                "checkpoint_ns": key.checkpoint_ns,
                "checkpoint_id": key.checkpoint_id,
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes against the checkpoint ``config`` names (its pending writes)."""
        configurable = config["configurable"]
        key = CheckpointKey(
            _thread_id(configurable.get("thread_id")),
            configurable.get("checkpoint_ns", ""),
            configurable["checkpoint_id"],
        )
        rows = [
            WriteRow(
                task_id, WRITES_IDX_MAP.get(channel, idx), channel, self.serde.dumps_typed(value), task_path
            )
            for idx, (channel, value) in enumerate(writes)
        ]
        await self._run("saves", partial(put_writes_plan, key, rows, now_ms()), write=True)

    # ---- deleting and copying --------------------------------------------------------------------

    async def adelete_thread(self, thread_id: str) -> None:
        """Every checkpoint and write of the thread; its agent too when the saver created it and it
        holds nothing else (no messages, tool calls or snapshots)."""
        await self._run("deletes", partial(delete_thread_plan, _thread_id(thread_id)), write=True)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Checkpoints whose metadata ``run_id`` is listed, with their writes and unshared blobs."""
        ids = _ids(run_ids, "run_ids")
        if ids:
            await self._run("deletes", partial(delete_runs_plan, ids), write=True)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to another; a new target agent records the
        fork in its lineage (source lineage + source). A source without checkpoints copies nothing."""
        source, target = _thread_id(source_thread_id), _thread_id(target_thread_id)
        if source == target:
            raise ValueError(f"cannot copy thread {source!r} onto itself")
        await self._run("saves", partial(copy_thread_plan, source, target, now_ms()), write=True)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep each namespace's newest checkpoint (and the ancestors its
        DeltaChannels are rebuilt from); ``delete``: delete the threads."""
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(PRUNE_STRATEGIES)}; got {strategy!r}")
        threads = [_thread_id(thread_id) for thread_id in _ids(thread_ids, "thread_ids")]
        if threads:
            plan = partial(prune_plan, threads, keep_latest=strategy == "keep_latest")
            await self._run("deletes", plan, write=True)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<counter>.<random>``, zero-padded so versions sort as text, as LangGraph's own savers make
        them: the random part keeps two branches forked from one checkpoint from minting the same
        version for different values (a blob's version is its identity here)."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"
