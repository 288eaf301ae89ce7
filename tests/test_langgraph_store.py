"""LangGraph threads as kodestore agents: sessions, retention, lineage, and what the tables hold.

A thread's first checkpoint makes it a session; ``store.delete`` and ``ops.prune`` remove it with its
checkpoints; ``copy_thread`` is a fork in the lineage; a checkpoint stores only the channels that
changed, and deletes leave no blob behind that no checkpoint uses.
"""

from __future__ import annotations

from typing import Any

import pytest
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
    put_test_checkpoint,
)

from kodestore.db.base import Plan, Stmt
from kodestore.langgraph import KodeCheckpointSaver
from kodestore.ops import prune
from kodestore.testing import sample_info, sample_message
from kodestore.validation import now_ms

TABLES = ("langgraph_checkpoints", "langgraph_blobs", "langgraph_checkpoint_channels", "langgraph_writes")


async def rows(store: Any, thread_id: str) -> dict[str, int]:
    """How many rows each checkpoint table holds for the thread."""

    def plan() -> Plan[dict[str, int]]:
        found = {}
        for table in TABLES:
            row = yield Stmt(f"SELECT COUNT(*) FROM {table} WHERE thread_id = ?", (thread_id,), "one")
            found[table.removeprefix("langgraph_")] = int(row[0])
        return found

    result: dict[str, int] = await store._records.driver.run(plan, write=False)
    return result


async def put_chain(
    saver: KodeCheckpointSaver, thread_id: str, *values: dict[str, Any], **kw: Any
) -> list[Any]:
    """Checkpoints on one thread, each the child of the previous, each a new version of its channels."""
    configs: list[Any] = []
    for step, value in enumerate(values, start=1):
        configs.append(
            await put_test_checkpoint(
                saver,
                thread_id=thread_id,
                parent_config=configs[-1] if configs else None,
                channel_values=value,
                channel_versions=dict.fromkeys(value, str(step)),
                **kw,
            )
        )
    return configs


async def test_first_checkpoint_makes_the_thread_a_session(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    before = now_ms()
    await put_chain(saver, "thread-1", {"a": 1})
    [session] = await store.query_sessions(agent_id="thread-1")
    assert session.template_id == "langgraph"
    assert session.metadata == {"source": "langgraph"}
    assert session.updated_at >= before
    assert "thread-1" in await store.list()
    assert (await store.load_info("thread-1")).lineage == []
    assert [s.agent_id for s in await store.query_sessions(template_id="langgraph")] == ["thread-1"]
    assert (await store.check_consistency()).consistent


async def test_an_existing_agent_keeps_its_info_and_is_marked_updated(store: Any) -> None:
    await store.save_info("agent-7", sample_info("agent-7", template_id="support"))
    [before] = await store.query_sessions(agent_id="agent-7")
    await put_chain(KodeCheckpointSaver(store), "agent-7", {"a": 1})
    [after] = await store.query_sessions(agent_id="agent-7")
    assert after.template_id == "support" and after.metadata == before.metadata
    assert after.updated_at >= before.updated_at


async def test_store_delete_removes_the_thread_and_every_checkpoint_row(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    configs = await put_chain(saver, "doomed", {"a": 1}, {"a": 2})
    await saver.aput_writes(configs[-1], [("a", 3)], "task-1")
    await put_chain(saver, "kept", {"a": 1})
    assert all(await rows(store, "doomed"))

    await store.delete("doomed")
    assert await rows(store, "doomed") == dict.fromkeys(
        ("checkpoints", "blobs", "checkpoint_channels", "writes"), 0
    )
    assert await saver.aget_tuple(generate_config("doomed")) is None
    assert await saver.aget_tuple(generate_config("kept")) is not None


async def test_retention_prunes_idle_threads_with_their_checkpoints(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    await put_chain(saver, "idle", {"a": 1}, {"a": 2})
    cutoff = now_ms() + 1
    deleted = await prune(store, older_than=cutoff)
    assert deleted == ["idle"]
    assert await store.query_sessions(agent_id="idle") == []
    assert sum((await rows(store, "idle")).values()) == 0


async def test_a_checkpoint_stores_only_the_channels_that_changed(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    first = await saver.aput(
        generate_config("dedupe"),
        generate_checkpoint(
            channel_values={"a": "big", "b": "bigger"}, channel_versions={"a": "1", "b": "1"}
        ),
        generate_metadata(step=0),
        {"a": "1", "b": "1"},
    )
    config = generate_config("dedupe", checkpoint_id=first["configurable"]["checkpoint_id"])
    second = await saver.aput(
        config,
        generate_checkpoint(
            channel_values={"a": "new", "b": "bigger"}, channel_versions={"a": "2", "b": "1"}
        ),
        generate_metadata(step=1),
        {"a": "2"},
    )
    assert await rows(store, "dedupe") == {
        "checkpoints": 2,
        "blobs": 3,
        "checkpoint_channels": 4,
        "writes": 0,
    }
    assert (await saver.aget_tuple(second)).checkpoint["channel_values"] == {"a": "new", "b": "bigger"}
    assert (await saver.aget_tuple(first)).checkpoint["channel_values"] == {"a": "big", "b": "bigger"}


async def test_deletes_drop_the_blobs_no_checkpoint_uses_any_more(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    shared = {"channel_values": {"s": "shared"}, "channel_versions": {"s": "1"}}
    first = await saver.aput(
        generate_config("gc"), generate_checkpoint(**shared), generate_metadata(run_id="run-1"), {"s": "1"}
    )
    parent = generate_config("gc", checkpoint_id=first["configurable"]["checkpoint_id"])
    values = {"s": "shared", "own": "run-2 only"}
    second = await saver.aput(
        parent,
        generate_checkpoint(channel_values=values, channel_versions={"s": "1", "own": "1"}),
        generate_metadata(run_id="run-2"),
        {"own": "1"},
    )
    await saver.aput_writes(second, [("own", "pending")], "task")
    assert (await rows(store, "gc"))["blobs"] == 2

    await saver.adelete_for_runs(["run-2"])
    assert await rows(store, "gc") == {"checkpoints": 1, "blobs": 1, "checkpoint_channels": 1, "writes": 0}
    assert (await saver.aget_tuple(first)).checkpoint["channel_values"] == {"s": "shared"}
    await saver.adelete_for_runs(["run-1"])
    assert sum((await rows(store, "gc")).values()) == 0


async def test_prune_keep_latest_keeps_the_head_of_each_namespace_and_its_blobs(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    await put_chain(saver, "busy", {"a": 1}, {"a": 2}, {"a": 3})
    await put_chain(saver, "busy", {"a": 10}, checkpoint_ns="child:1")
    await saver.aprune(["busy"])
    assert await rows(store, "busy") == {"checkpoints": 2, "blobs": 2, "checkpoint_channels": 2, "writes": 0}
    assert (await saver.aget_tuple(generate_config("busy"))).checkpoint["channel_values"] == {"a": 3}
    assert await store.exists("busy")


async def test_copy_thread_is_a_fork_in_the_lineage(store: Any) -> None:
    info = sample_info("origin")
    info.lineage = ["root"]
    await store.save_info("origin", info)
    saver = KodeCheckpointSaver(store)
    source = await put_chain(saver, "origin", {"a": 1}, {"a": 2})
    await saver.aput_writes(source[-1], [("a", 3)], "task")

    await saver.acopy_thread("origin", "fork-1")
    info = await store.load_info("fork-1")
    assert info.template_id == "langgraph"
    assert info.lineage == ["root", "origin"]
    assert (await store.get_lineage("origin"))["descendants"] == ["fork-1"]
    assert await rows(store, "fork-1") == await rows(store, "origin")
    copied = await saver.aget_tuple(generate_config("fork-1"))
    assert copied.checkpoint["channel_values"] == {"a": 2}
    assert copied.pending_writes == [("task", "a", 3)]

    await saver.acopy_thread("origin", "fork-1")  # again: nothing doubles
    assert await rows(store, "fork-1") == await rows(store, "origin")


async def test_copying_a_thread_without_checkpoints_creates_nothing(store: Any) -> None:
    await store.save_info("empty", sample_info("empty"))
    saver = KodeCheckpointSaver(store)
    await saver.acopy_thread("empty", "copy")
    await saver.acopy_thread("missing", "copy")
    assert not await store.exists("copy")
    with pytest.raises(ValueError, match="onto itself"):
        await saver.acopy_thread("empty", "empty")


async def test_delete_thread_removes_the_agent_only_when_the_saver_made_it(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    await put_chain(saver, "made-by-saver", {"a": 1})
    await store.save_info("real-agent", sample_info("real-agent"))
    await store.save_messages("real-agent", [sample_message(0)])
    await put_chain(saver, "real-agent", {"a": 1})

    for thread in ("made-by-saver", "real-agent"):
        await saver.adelete_thread(thread)
        assert sum((await rows(store, thread)).values()) == 0
    assert not await store.exists("made-by-saver")
    assert await store.exists("real-agent")
    assert len(await store.load_messages("real-agent")) == 1

    await put_chain(saver, "pruned", {"a": 1})
    await saver.aprune(["pruned"], strategy="delete")
    assert not await store.exists("pruned")
