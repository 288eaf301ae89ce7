"""``KodeCheckpointSaver`` at its edges: listing and paging, write semantics, exact text, arguments,
the sync bridge, metrics, and the import hint without LangGraph."""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Any

import pytest
from langgraph.checkpoint.base import ERROR
from langgraph.checkpoint.conformance.test_utils import (
    generate_config,
    generate_metadata,
    put_test_checkpoint,
)

from kodestore import InvalidAgentId, JSONStore, MemoryStore, StoreClosed
from kodestore.langgraph import KodeCheckpointSaver
from kodestore.langgraph import saver as saver_module
from kodestore.testing import BAD_AGENT_IDS


async def put_many(saver: KodeCheckpointSaver, thread_id: str, count: int, **kw: Any) -> list[str]:
    ids = []
    parent = None
    for step in range(count):
        parent = await put_test_checkpoint(
            saver, thread_id=thread_id, parent_config=parent, metadata=generate_metadata(step=step, **kw)
        )
        ids.append(parent["configurable"]["checkpoint_id"])
    return ids


async def listed(saver: KodeCheckpointSaver, config: Any, **kw: Any) -> list[str]:
    return [t.checkpoint["id"] async for t in saver.alist(config, **kw)]


async def test_list_streams_pages_in_a_total_order(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saver_module, "PAGE_SIZE", 7)
    saver = KodeCheckpointSaver(store)
    one = await put_many(saver, "t-1", 12)
    two = await put_many(saver, "t-2", 9)

    everything = await listed(saver, None)
    assert everything == sorted(one + two, reverse=True)
    assert await listed(saver, generate_config("t-1")) == one[::-1]
    assert await listed(saver, None, limit=10) == everything[:10]
    assert (
        await listed(saver, generate_config("t-1"), before=generate_config("t-1", checkpoint_id=one[5]))
        == one[4::-1]
    )
    assert await listed(saver, generate_config("t-1", checkpoint_id=one[3])) == [one[3]]
    assert await listed(saver, generate_config("t-1"), limit=0) == []


async def test_list_filter_compares_metadata_values(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    ids = await put_many(saver, "f", 3, tags={"team": "core", "n": [1, 2]}, score=1)
    await put_test_checkpoint(
        saver, thread_id="f", metadata=generate_metadata(tags={"team": "core"}, score=1.0)
    )
    assert (
        await listed(saver, generate_config("f"), filter={"tags": {"team": "core", "n": [1, 2]}}) == ids[::-1]
    )
    assert len(await listed(saver, generate_config("f"), filter={"score": 1})) == 4  # 1 == 1.0, as in JSON
    assert await listed(saver, generate_config("f"), filter={"step": 1, "score": 1}) == [ids[1]]
    assert (
        await listed(saver, generate_config("f"), filter={"tags": {"n": [1, 2]}}) == []
    )  # equal, not contained


async def test_writes_keep_regular_ones_replace_special_ones_and_sort_like_langgraph(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    config = await put_test_checkpoint(saver, thread_id="w")
    await saver.aput_writes(config, [("ch", "first"), (ERROR, "boom")], "task-b", task_path="~b")
    await saver.aput_writes(config, [("ch", "retry"), (ERROR, "boom again")], "task-b", task_path="~b")
    await saver.aput_writes(config, [("x", 1), ("y", 2)], "task-a", task_path="~a")
    pending = (await saver.aget_tuple(config)).pending_writes
    assert pending == [
        ("task-a", "x", 1),
        ("task-a", "y", 2),
        ("task-b", ERROR, "boom again"),
        ("task-b", "ch", "first"),
    ]


TRICKY = "nul\x00 soh\x01 \\u0000 %s ? ' 日本語 🙂"


async def test_text_round_trips_exactly(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    config = await put_test_checkpoint(
        saver,
        thread_id="text",
        checkpoint_ns=f"ns:{TRICKY}",
        channel_values={TRICKY: TRICKY, "bytes": b"\x00\xff"},
        metadata=generate_metadata(note={"nested": TRICKY}),
    )
    await saver.aput_writes(config, [(TRICKY, {TRICKY: TRICKY})], f"task {TRICKY}", task_path=TRICKY)
    found = await saver.aget_tuple(config)
    assert found.config["configurable"]["checkpoint_ns"] == f"ns:{TRICKY}"
    assert found.checkpoint["channel_values"] == {TRICKY: TRICKY, "bytes": b"\x00\xff"}
    assert found.metadata["note"] == {"nested": TRICKY}
    assert found.pending_writes == [(f"task {TRICKY}", TRICKY, {TRICKY: TRICKY})]
    assert await listed(
        saver, generate_config("text", checkpoint_ns=f"ns:{TRICKY}"), filter={"note": {"nested": TRICKY}}
    )


def _config(thread_id: str, **extra: str) -> Any:
    return {
        "configurable": {"thread_id": thread_id, "checkpoint_ns": "", **extra}
    }  # "" is falsy for generate_config


async def test_thread_ids_are_agent_ids(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    calls = [
        lambda bad: saver.aput(_config(bad), *_checkpoint_args()),
        lambda bad: saver.aput_writes(_config(bad, checkpoint_id="c"), [("ch", 1)], "t"),
        lambda bad: saver.aget_tuple(_config(bad)),
        lambda bad: listed(saver, _config(bad)),
        lambda bad: saver.adelete_thread(bad),
        lambda bad: saver.acopy_thread("fine", bad),
        lambda bad: saver.aprune([bad]),
    ]
    for call in calls:
        for bad in BAD_AGENT_IDS:
            with pytest.raises(InvalidAgentId):
                await call(bad)
    assert await store.list() == []


async def test_non_string_thread_ids_become_strings(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    stored = await put_test_checkpoint(saver, thread_id=7)  # type: ignore[arg-type]
    assert (await saver.aget_tuple(stored)).config["configurable"]["thread_id"] == "7"
    assert await store.exists("7")


async def test_bad_arguments(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    with pytest.raises(ValueError, match="strategy"):
        await saver.aprune(["t"], strategy="keep_some")
    with pytest.raises(ValueError, match="thread_id"):
        await saver.aget_tuple({"configurable": {}})
    with pytest.raises(ValueError, match="not a string"):
        await saver.aprune("abc")  # not the threads "a", "b" and "c"
    with pytest.raises(ValueError, match="not a string"):
        await saver.adelete_for_runs("run-1")


async def test_needs_an_open_sql_store(tmp_path: Any) -> None:
    async with JSONStore(tmp_path) as files_only:
        with pytest.raises(TypeError, match="SQL-backed"):
            KodeCheckpointSaver(files_only)  # type: ignore[arg-type]
    store = await MemoryStore().open()
    saver = KodeCheckpointSaver(store)
    await store.close()
    with pytest.raises(StoreClosed):
        await saver.aget_tuple(generate_config("t"))
    with pytest.raises(StoreClosed):
        KodeCheckpointSaver(store)


async def test_calls_are_counted_in_the_store_metrics(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    before = store.metrics.operations()
    config = await put_test_checkpoint(saver, thread_id="m")
    await saver.aget_tuple(config)
    await saver.adelete_thread("m")
    after = store.metrics.operations()
    assert (after.saves - before.saves, after.loads - before.loads, after.deletes - before.deletes) == (
        1,
        1,
        1,
    )


async def test_sync_methods_run_on_the_store_loop_from_other_threads(store: Any) -> None:
    saver = KodeCheckpointSaver(store)

    def work() -> tuple[Any, ...]:
        config = saver.put(generate_config("s"), *_checkpoint_args())
        saver.put_writes(config, [("ch", 1)], "task")
        found = saver.get_tuple(config)
        every = list(saver.list(None))
        first = next(iter(saver.list(generate_config("s"))))  # abandoned mid-way: closed on the loop
        saver.copy_thread("s", "s-copy")
        saver.prune(["s-copy"], strategy="delete")
        saver.delete_for_runs(["no-such-run"])
        saver.delete_thread("s")
        return found, every, first, saver.get_tuple(generate_config("s"))

    found, every, first, gone = await asyncio.to_thread(work)
    assert found.pending_writes == [("task", "ch", 1)]
    assert [t.config for t in every] == [found.config] == [first.config]
    assert gone is None
    with pytest.raises(asyncio.InvalidStateError):
        saver.list(None).__next__()


def _checkpoint_args() -> tuple[Any, ...]:
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

    return generate_checkpoint(), generate_metadata(), {}


async def test_sync_methods_need_the_store_loop(store: Any) -> None:
    outside = await asyncio.to_thread(KodeCheckpointSaver, store)  # no running loop in that thread
    with pytest.raises(RuntimeError, match="loop="):
        await asyncio.to_thread(outside.get_tuple, generate_config("t"))
    stopped = KodeCheckpointSaver(store, loop=asyncio.new_event_loop())
    with pytest.raises(RuntimeError, match="not running"):
        await asyncio.to_thread(stopped.get_tuple, generate_config("t"))
    stopped.loop.close()


def test_import_without_langgraph_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [
        m for m in sys.modules if m == "kodestore.langgraph" or m.startswith("kodestore.langgraph.")
    ]:
        monkeypatch.delitem(sys.modules, name)
    for name in ("langgraph", "langgraph.checkpoint", "langgraph.checkpoint.base"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'kodestore\[langgraph\]'"):
        importlib.import_module("kodestore.langgraph")
