"""Suspended states (approvals waiting for a human, with an expiry) and feedback, on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import kodestore.hitl as hitl
from kodestore import AgentNotFound, InvalidAgentId, SerializationError, StoreClosed
from kodestore.models import Feedback, SuspendedState
from kodestore.ops import prune
from kodestore.testing import BAD_AGENT_IDS, sample_info
from kodestore.validation import now_ms


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The module's clock, moved by hand: ``clock[0] += ms``."""
    now = [now_ms()]
    monkeypatch.setattr(hitl, "now_ms", lambda: now[0])
    return now


async def agent(store: Any, agent_id: str, template_id: str = "tpl-default") -> str:
    await store.save_info(agent_id, sample_info(agent_id, template_id))
    return agent_id


# ---- suspended states ------------------------------------------------------------------------------


async def test_save_get_replace_delete(store: Any, clock: list[int]) -> None:
    await agent(store, "a1")
    payload = {"tool": "refund", "args": {"amount": 42.5, "items": [1, "two", None]}, "text": "nul\x00 é"}
    saved = await store.save_suspended_state("a1", "approve-1", payload)
    assert saved == SuspendedState("a1", "approve-1", payload, clock[0], clock[0] + 7 * 86_400_000)
    assert await store.get_suspended_state("a1", "approve-1") == saved

    clock[0] += 5
    replaced = await store.save_suspended_state("a1", "approve-1", {"v": 2}, ttl=timedelta(minutes=1))
    assert replaced.expires_at == clock[0] + 60_000
    assert await store.get_suspended_state("a1", "approve-1") == replaced
    assert await store.delete_suspended_state("a1", "approve-1") is True
    assert await store.delete_suspended_state("a1", "approve-1") is False
    assert await store.get_suspended_state("a1", "approve-1") is None
    assert await store.get_suspended_state("a1", "never") is None


async def test_expired_states_are_invisible_before_cleanup(store: Any, clock: list[int]) -> None:
    await agent(store, "a1")
    await agent(store, "a2")
    await store.save_suspended_state("a1", "short", {}, ttl=timedelta(seconds=1))
    await store.save_suspended_state("a1", "long", {}, ttl=timedelta(hours=1))
    await store.save_suspended_state("a2", "short", {}, ttl=timedelta(milliseconds=999))

    clock[0] += 999  # a2's expires exactly now: gone; a1's has 1 ms left
    assert await store.get_suspended_state("a2", "short") is None
    assert await store.get_suspended_state("a1", "short") is not None
    clock[0] += 1
    assert await store.get_suspended_state("a1", "short") is None
    assert [s.state_id for s in await store.list_suspended_states()] == ["long"]
    assert await store.list_suspended_states("a2") == []
    assert await store.delete_suspended_state("a1", "short") is False  # expired: it was not there

    assert await store.cleanup_expired_states() == 1  # a2's; a1's expired one was deleted above
    assert await store.cleanup_expired_states() == 0
    assert [s.state_id for s in await store.list_suspended_states("a1")] == ["long"]


async def test_list_is_newest_first_in_a_total_order(store: Any, clock: list[int]) -> None:
    for agent_id in ("a", "b"):
        await agent(store, agent_id)
    for state_id in ("s1", "s2"):
        for agent_id in ("a", "b"):
            await store.save_suspended_state(agent_id, state_id, {"who": agent_id})
    clock[0] += 1
    await store.save_suspended_state("a", "s0", {})
    listed = [(s.agent_id, s.state_id) for s in await store.list_suspended_states()]
    assert listed == [("a", "s0"), ("b", "s2"), ("b", "s1"), ("a", "s2"), ("a", "s1")]
    assert [s.state_id for s in await store.list_suspended_states(agent_id="b")] == ["s2", "s1"]


async def test_a_waiting_agent_counts_as_updated(store: Any, clock: list[int]) -> None:
    await agent(store, "waiting")
    clock[0] += 60_000
    await store.save_suspended_state("waiting", "s", {})
    [session] = await store.query_sessions(agent_id="waiting")
    assert session.updated_at == clock[0]


async def test_states_and_feedback_go_with_their_agent(store: Any) -> None:
    for agent_id in ("gone", "pruned", "kept"):
        await agent(store, agent_id, template_id=f"tpl-{agent_id}")
        await store.save_suspended_state(agent_id, "s", {"x": 1})
        await store.add_feedback(agent_id, 5)
    await store.delete("gone")
    assert await prune(store, older_than=now_ms() + 1, template_id="tpl-pruned") == ["pruned"]
    assert [s.agent_id for s in await store.list_suspended_states()] == ["kept"]
    assert [f.agent_id for f in await store.query_feedback()] == ["kept"]


async def test_saving_for_an_agent_without_info_raises(store: Any) -> None:
    with pytest.raises(AgentNotFound, match="save_info"):
        await store.save_suspended_state("nobody", "s", {})
    with pytest.raises(AgentNotFound, match="save_info"):
        await store.add_feedback("nobody", 3)
    assert await store.list_suspended_states() == []
    assert await store.query_feedback() == []


BAD_STATE_ARGUMENTS = [
    (("s", ["not", "a", "dict"]), "payload must be a dict"),
    (("s", {"when": datetime.now(UTC)}), r"payload\.when"),
    (("s", {1: "int key"}), "payload"),
    (("", {}), "state_id"),
    ((7, {}), "state_id"),
    (("s", {}, timedelta(0)), "ttl"),
    (("s", {}, timedelta(seconds=-1)), "ttl"),
    (("s", {}, 60), "ttl"),
]


async def test_suspended_state_arguments_are_checked(store: Any) -> None:
    await agent(store, "a1")
    for arguments, message in BAD_STATE_ARGUMENTS:
        with pytest.raises(ValueError, match=message):
            await store.save_suspended_state("a1", *arguments)
    assert await store.list_suspended_states() == []


async def test_a_payload_that_is_not_json_is_a_serialization_error(store: Any) -> None:
    await agent(store, "a1")
    with pytest.raises(SerializationError, match=r"payload\.deep\[1\]"):
        await store.save_suspended_state("a1", "s", {"deep": [1, object()]})


async def test_every_method_checks_the_agent_id(store: Any) -> None:
    calls = [
        lambda bad: store.save_suspended_state(bad, "s", {}),
        lambda bad: store.get_suspended_state(bad, "s"),
        lambda bad: store.list_suspended_states(bad),
        lambda bad: store.delete_suspended_state(bad, "s"),
        lambda bad: store.add_feedback(bad, 3),
        lambda bad: store.query_feedback(agent_id=bad),
    ]
    for call in calls:
        for bad in BAD_AGENT_IDS:
            with pytest.raises(InvalidAgentId):
                await call(bad)


async def test_a_closed_store_refuses(store: Any) -> None:
    await store.close()
    with pytest.raises(StoreClosed):
        await store.cleanup_expired_states()
    with pytest.raises(StoreClosed):
        await store.query_feedback()


# ---- feedback --------------------------------------------------------------------------------------


async def test_add_and_query_feedback(store: Any, clock: list[int]) -> None:
    await agent(store, "a1")
    first = await store.add_feedback(
        "a1", 2, comment="too long", message_seq=3, correction={"text": "shorter"}, metadata={"user": "u1"}
    )
    clock[0] += 1
    second = await store.add_feedback("a1", 5, correction="perfect\x00")
    assert first != second and first.startswith("fb-")

    found = await store.query_feedback(agent_id="a1")
    assert found == [
        Feedback(second, "a1", 5, clock[0], correction="perfect\x00"),
        Feedback(first, "a1", 2, clock[0] - 1, "too long", 3, {"text": "shorter"}, {"user": "u1"}),
    ]
    assert found[1].to_dict() == {
        "id": first,
        "agentId": "a1",
        "rating": 2,
        "createdAt": clock[0] - 1,
        "comment": "too long",
        "messageSeq": 3,
        "correction": {"text": "shorter"},
        "metadata": {"user": "u1"},
    }
    assert Feedback.from_dict(found[1].to_dict()) == found[1]


async def test_query_feedback_filters_and_pages(store: Any, clock: list[int]) -> None:
    start = clock[0]
    for agent_id in ("a", "b"):
        await agent(store, agent_id)
    for rating in (1, 2, 3, 4, 5):
        for agent_id in ("a", "b"):
            await store.add_feedback(agent_id, rating)  # ties in created_at: the id breaks them
        clock[0] += 1000
    everything = await store.query_feedback()
    assert [f.rating for f in everything] == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    pages = [await store.query_feedback(limit=3, offset=offset) for offset in range(0, 12, 3)]
    assert [f.id for page in pages for f in page] == [f.id for f in everything]

    assert {f.rating for f in await store.query_feedback(min_rating=2, max_rating=3)} == {2, 3}
    assert [f.rating for f in await store.query_feedback(agent_id="b", min_rating=5)] == [5]
    since = datetime.fromtimestamp((start + 3000) / 1000, UTC)
    assert [f.rating for f in await store.query_feedback(created_after=since)] == [5, 5, 4, 4]
    assert [f.rating for f in await store.query_feedback(created_before=start + 1000)] == [1, 1]
    assert await store.query_feedback(min_rating=4, max_rating=3) == []


BAD_FEEDBACK_ARGUMENTS = [
    ({"rating": 0}, "rating"),
    ({"rating": 6}, "rating"),
    ({"rating": True}, "rating"),
    ({"rating": 4.0}, "rating"),
    ({"rating": "5"}, "rating"),
    ({"rating": 3, "comment": 1}, "comment"),
    ({"rating": 3, "message_seq": -1}, "message_seq"),
    ({"rating": 3, "message_seq": True}, "message_seq"),
    ({"rating": 3, "correction": ["x"]}, "correction"),
    ({"rating": 3, "metadata": "x"}, "metadata"),
    ({"rating": 3, "metadata": {"at": datetime.now(UTC)}}, r"metadata\.at"),
]
BAD_FEEDBACK_FILTERS = [
    {"min_rating": 0},
    {"max_rating": 6},
    {"min_rating": True},
    {"limit": -1},
    {"offset": "1"},
    {"created_after": "x"},
]


async def test_feedback_arguments_are_checked(store: Any) -> None:
    await agent(store, "a1")
    for arguments, message in BAD_FEEDBACK_ARGUMENTS:
        with pytest.raises(ValueError, match=message):
            await store.add_feedback("a1", **arguments)
    for filters in BAD_FEEDBACK_FILTERS:
        with pytest.raises(ValueError):
            await store.query_feedback(**filters)
    assert await store.query_feedback() == []


async def test_calls_are_counted_in_the_metrics(store: Any) -> None:
    await agent(store, "a1")
    before = store.metrics.operations()
    await store.save_suspended_state("a1", "s", {})
    await store.get_suspended_state("a1", "s")
    await store.add_feedback("a1", 4)
    await store.query_feedback()
    await store.cleanup_expired_states()
    after = store.metrics.operations()
    deltas = [getattr(after, k) - getattr(before, k) for k in ("saves", "loads", "queries", "deletes")]
    assert deltas == [2, 1, 1, 1]


async def test_stats_count_feedback_and_average_the_ratings(store: Any) -> None:
    for agent_id in ("a", "b", "quiet"):
        await agent(store, agent_id)
    for agent_id, rating in (("a", 5), ("a", 2), ("b", 4)):
        await store.add_feedback(agent_id, rating)
    every = await store.aggregate_stats()
    assert (every.feedback_count, every.mean_rating) == (3, pytest.approx(11 / 3))
    one = await store.aggregate_stats("a")
    assert (one.feedback_count, one.mean_rating) == (2, 3.5)
    none = await store.aggregate_stats("quiet")
    assert (none.feedback_count, none.mean_rating) == (0, None)
