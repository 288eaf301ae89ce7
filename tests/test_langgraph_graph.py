"""End to end: real LangGraph graphs checkpointed by ``KodeCheckpointSaver`` on every backend.

A human-approval graph is interrupted, resumed with ``Command(resume=...)`` and its history read
(async, and through the sync API from a worker thread); a fork from an old checkpoint keeps both
branches apart; a DeltaChannel still rebuilds its value after ``prune``.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.channels import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from kodestore.db.base import Plan, Stmt
from kodestore.langgraph import KodeCheckpointSaver


class Approval(TypedDict, total=False):
    request: str
    log: Annotated[list[str], operator.add]
    decision: str


def draft(state: Approval) -> Approval:
    return {"log": [f"drafted {state['request']}"]}


def approve(state: Approval) -> Approval:
    answer = interrupt({"question": "approve?", "request": state["request"]})
    return {"decision": answer, "log": [f"human said {answer}"]}


def act(state: Approval) -> Approval:
    return {"log": ["refunded" if state["decision"] == "yes" else "declined"]}


def approval_graph(saver: KodeCheckpointSaver) -> Any:
    builder = StateGraph(Approval)
    builder.add_node("draft", draft)
    builder.add_node("approve", approve)
    builder.add_node("act", act)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "approve")
    builder.add_edge("approve", "act")
    builder.add_edge("act", END)
    return builder.compile(checkpointer=saver)


def config(thread_id: str) -> Any:
    return {"configurable": {"thread_id": thread_id}}


async def test_interrupt_resume_and_history(store: Any) -> None:
    graph = approval_graph(KodeCheckpointSaver(store))
    cfg = config("refund-42")

    paused = await graph.ainvoke({"request": "refund order 42", "log": []}, cfg)
    assert [i.value for i in paused["__interrupt__"]] == [
        {"question": "approve?", "request": "refund order 42"}
    ]
    waiting = await graph.aget_state(cfg)
    assert waiting.next == ("approve",)
    assert waiting.values["log"] == ["drafted refund order 42"]

    done = await graph.ainvoke(Command(resume="yes"), cfg)
    assert done["log"] == ["drafted refund order 42", "human said yes", "refunded"]
    assert done["decision"] == "yes"
    assert (await graph.aget_state(cfg)).next == ()

    history = [snapshot async for snapshot in graph.aget_state_history(cfg)]
    assert [s.next for s in history] == [(), ("act",), ("approve",), ("draft",), ("__start__",)]
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]
    for newer, older in itertools.pairwise(history):  # each one's parent is the next
        assert (
            newer.parent_config["configurable"]["checkpoint_id"]
            == older.config["configurable"]["checkpoint_id"]
        )
    assert history[0].values == done

    sync_history = await asyncio.to_thread(lambda: list(graph.get_state_history(cfg)))
    assert [s.config for s in sync_history] == [s.config for s in history]
    assert [s.values for s in sync_history] == [s.values for s in history]
    two = await asyncio.to_thread(lambda: list(graph.get_state_history(cfg, limit=2)))
    assert [s.config for s in two] == [s.config for s in history[:2]]


async def test_sync_graph_runs_from_a_worker_thread(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    graph = approval_graph(saver)
    cfg = config("sync-thread")

    await asyncio.to_thread(graph.invoke, {"request": "r", "log": []}, cfg)
    done = await asyncio.to_thread(graph.invoke, Command(resume="no"), cfg)
    assert done["log"] == ["drafted r", "human said no", "declined"]
    with pytest.raises(asyncio.InvalidStateError, match="async interface"):
        saver.get_tuple(cfg)  # on the store's own loop it would deadlock


async def test_forks_from_one_checkpoint_keep_their_own_values(store: Any) -> None:
    """Two updates of one old checkpoint mint new versions of the same channels on two branches; the
    random part of each version keeps their blobs apart (a shared blob would mix the branches)."""
    graph = approval_graph(KodeCheckpointSaver(store))
    cfg = config("forked")
    await graph.ainvoke({"request": "r", "log": []}, cfg)
    waiting = (await graph.aget_state(cfg)).config
    ends = {}
    for answer in ("yes", "no"):
        fork = await graph.aupdate_state(waiting, {"decision": answer, "log": [answer]}, as_node="approve")
        ends[answer] = await graph.ainvoke(None, fork)
    assert ends["yes"]["log"] == ["drafted r", "yes", "refunded"]
    assert ends["no"]["log"] == ["drafted r", "no", "declined"]
    heads = [s async for s in graph.aget_state_history(cfg) if s.next == ()]
    assert sorted(s.values["decision"] for s in heads) == ["no", "yes"]
    for head in heads:
        assert head.values == ends[head.values["decision"]]


class Fan(TypedDict, total=False):
    seen: Annotated[list[str], operator.add]


def fan_graph(saver: KodeCheckpointSaver) -> Any:
    """``start`` fans out to three branches that write concurrently, then ``join`` runs."""
    builder = StateGraph(Fan)
    builder.add_node("start", lambda state: {"seen": ["start"]})
    for branch in ("b1", "b2", "b3"):
        builder.add_node(branch, lambda state, name=branch: {"seen": [name]})
        builder.add_edge("start", branch)
    builder.add_node("join", lambda state: {"seen": ["join"]})
    builder.add_edge(["b1", "b2", "b3"], "join")
    builder.add_edge(START, "start")
    builder.add_edge("join", END)
    return builder.compile(checkpointer=saver)


async def test_parallel_branches_and_concurrent_threads(store: Any) -> None:
    graph = fan_graph(KodeCheckpointSaver(store))
    threads = [f"fan-{i}" for i in range(8)]
    results = await asyncio.gather(*(graph.ainvoke({"seen": []}, config(t)) for t in threads))
    for result in results:
        assert result["seen"][0] == "start" and result["seen"][-1] == "join"
        assert sorted(result["seen"][1:4]) == ["b1", "b2", "b3"]
    for thread in threads:
        assert (await graph.aget_state(config(thread))).values == results[0]
    sessions = await store.query_sessions(template_id="langgraph", limit=100)
    assert sorted(s.agent_id for s in sessions) == sorted(threads)


# ---- DeltaChannel ----------------------------------------------------------------------------------


def extend(state: list[int], batches: list[Any]) -> list[int]:
    out = list(state)
    for batch in batches:
        out.extend(batch)
    return out


class Counting(TypedDict):
    items: Annotated[list[int], DeltaChannel(extend, snapshot_frequency=4)]
    n: int


def count_graph(saver: KodeCheckpointSaver) -> Any:
    builder = StateGraph(Counting)
    builder.add_node("step", lambda state: {"items": [state["n"]], "n": state["n"] + 1})
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", lambda state: END if state["n"] >= 7 else "step")
    return builder.compile(checkpointer=saver)


async def test_prune_keeps_what_a_delta_channel_is_rebuilt_from(store: Any) -> None:
    saver = KodeCheckpointSaver(store)
    graph = count_graph(saver)
    await graph.ainvoke({"n": 0}, config("counting"))
    expected = (await graph.aget_state(config("counting"))).values
    assert expected == {"items": [0, 1, 2, 3, 4, 5, 6], "n": 7}
    assert "counters_since_delta_snapshot" in (await saver.aget_tuple(config("counting"))).metadata
    await saver.acopy_thread("counting", "naive")

    await saver.aprune(["counting"], strategy="keep_latest")
    kept = [s async for s in graph.aget_state_history(config("counting"))]
    assert 1 < len(kept) < 9  # the head and its ancestors back to the last snapshot, no more
    assert (await graph.aget_state(config("counting"))).values == expected

    # control: keeping the head alone (what a DeltaChannel-unaware prune does) loses the items
    head = (await saver.aget_tuple(config("naive"))).config["configurable"]["checkpoint_id"]

    def keep_head_only() -> Plan[None]:
        yield Stmt(
            "DELETE FROM langgraph_checkpoints WHERE thread_id = ? AND checkpoint_id <> ?", ("naive", head)
        )

    await store._records.driver.run(keep_head_only, write=True)
    assert (await graph.aget_state(config("naive"))).values["items"] != expected["items"]
