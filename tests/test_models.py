"""Models convert losslessly to and from the TypeScript SDK's JSON shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kodestore.models import (
    AgentInfo,
    Bookmark,
    CompressionRecord,
    HistoryWindow,
    MediaCacheRecord,
    Message,
    RecoveredFile,
    Snapshot,
    Timeline,
    TodoSnapshot,
    ToolCallRecord,
    _Model,
)

BOOKMARK = {"seq": 3, "timestamp": 1_700_000_000_000}
MESSAGE = {"role": "assistant", "content": [{"type": "text", "text": "hi"}], "metadata": {"k": 1}}
TIMELINE = {"cursor": 3, "bookmark": BOOKMARK, "event": {"channel": "progress", "type": "text_chunk"}}

SDK_SHAPES: list[tuple[type[Any], dict[str, Any]]] = [
    (
        AgentInfo,
        {
            "agentId": "agt-1",
            "templateId": "coder",
            "createdAt": "2026-11-01T10:00:00.000Z",
            "lineage": ["agt-0"],
            "configVersion": "v2",
            "messageCount": 4,
            "lastSfpIndex": 3,
            "lastBookmark": BOOKMARK,
            "breakpoint": "READY",
            "metadata": {"userId": "u1"},
        },
    ),
    (Message, MESSAGE),
    (Message, {"role": "user", "content": []}),
    (
        ToolCallRecord,
        {
            "id": "call-1",
            "name": "bash_run",
            "input": {"cmd": "ls"},
            "state": "FAILED",
            "approval": {"required": True, "decision": "allow", "decidedBy": "me", "decidedAt": 5},
            "error": "exit 1",
            "isError": True,
            "startedAt": 1,
            "completedAt": 2,
            "durationMs": 1,
            "createdAt": 1,
            "updatedAt": 2,
            "auditTrail": [{"state": "FAILED", "timestamp": 2, "note": "x"}],
        },
    ),
    (Bookmark, BOOKMARK),
    (Timeline, TIMELINE),
    (
        Snapshot,
        {
            "id": "sfp:3",
            "messages": [MESSAGE],
            "lastSfpIndex": 3,
            "lastBookmark": BOOKMARK,
            "createdAt": "2026-11-01T10:00:00.000Z",
            "metadata": {"label": "x"},
        },
    ),
    (TodoSnapshot, {"todos": [{"id": "t", "title": "a", "status": "pending"}], "version": 2, "updatedAt": 9}),
    (
        HistoryWindow,
        {
            "id": "w1",
            "messages": [MESSAGE],
            "events": [TIMELINE],
            "stats": {"messageCount": 1, "tokenCount": 10, "eventCount": 1},
            "timestamp": 5,
        },
    ),
    (
        CompressionRecord,
        {
            "id": "c1",
            "windowId": "w1",
            "config": {"model": "m", "prompt": "p", "threshold": 0.8},
            "summary": "s",
            "ratio": 0.3,
            "recoveredFiles": ["a.py"],
            "timestamp": 6,
        },
    ),
    (RecoveredFile, {"path": "a.py", "content": "x\x00\r\n", "mtime": 1, "timestamp": 2}),
    (
        MediaCacheRecord,
        {
            "key": "k",
            "provider": "openai",
            "mimeType": "image/png",
            "sizeBytes": 10,
            "fileId": "f",
            "fileUri": "u",
            "createdAt": 3,
        },
    ),
]


@pytest.mark.parametrize(("model", "data"), SDK_SHAPES, ids=lambda v: getattr(v, "__name__", ""))
def test_sdk_shape_round_trips(model: type[Any], data: dict[str, Any]) -> None:
    assert model.from_dict(data).to_dict() == data


def test_unknown_keys_survive_a_round_trip() -> None:
    data = {**MESSAGE, "newerField": {"x": [1, 2]}}
    message = Message.from_dict(data)
    assert message.extra == {"newerField": {"x": [1, 2]}}
    assert message.to_dict() == data


def test_missing_required_key_is_named() -> None:
    with pytest.raises(ValueError, match="templateId"):
        AgentInfo.from_dict({"agentId": "a", "createdAt": "x"})


def test_nested_models_are_models() -> None:
    info = AgentInfo.from_dict(SDK_SHAPES[0][1])
    assert isinstance(info.last_bookmark, Bookmark) and info.last_bookmark.seq == 3
    snapshot = Snapshot.from_dict(SDK_SHAPES[6][1])
    assert isinstance(snapshot.messages[0], Message)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(
    role=st.sampled_from(["user", "assistant", "system"]),
    blocks=st.lists(st.dictionaries(st.text(), json_values, max_size=4), max_size=4),
    metadata=st.none() | st.dictionaries(st.text(), json_values, max_size=3),
)
def test_any_message_round_trips(role: str, blocks: list[dict[str, Any]], metadata: Any) -> None:
    data: dict[str, Any] = {"role": role, "content": blocks}
    if metadata is not None:
        data["metadata"] = metadata
    assert Message.from_dict(data).to_dict() == data


def test_to_dict_leaves_out_none_optionals_and_keeps_required_none() -> None:
    record = ToolCallRecord("call-1", "bash", {"cmd": "ls"}, "PENDING", {"required": False})
    assert record.to_dict() == {
        "id": "call-1",
        "name": "bash",
        "input": {"cmd": "ls"},
        "state": "PENDING",
        "approval": {"required": False},
        "createdAt": 0,
        "updatedAt": 0,
        "auditTrail": [],
    }
    timeline = Timeline(3, None, {"channel": "progress"}, extra={"x": 1})  # type: ignore[arg-type]
    assert timeline.to_dict() == {"cursor": 3, "bookmark": None, "event": {"channel": "progress"}, "x": 1}
    assert type(record).to_dict is not _Model.to_dict  # compiled on first use, for the class


def test_a_subclass_with_more_fields_converts_them_too() -> None:
    @dataclass(slots=True)
    class TaggedMessage(Message):
        tag: str = "t"

    plain = Message("user", [{"type": "text", "text": "hi"}])
    assert plain.to_dict() == {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    tagged = TaggedMessage("user", [], tag="x")
    assert tagged.to_dict() == {"role": "user", "content": [], "tag": "x"}
    assert plain.to_dict() == {"role": "user", "content": [{"type": "text", "text": "hi"}]}


def test_a_subclass_with_more_fields_reads_them_too() -> None:
    @dataclass(slots=True)
    class TaggedMessage(Message):
        tag: str = "t"

    data = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert Message.from_dict(data) == Message("user", data["content"])
    tagged = TaggedMessage.from_dict({**data, "tag": "x", "newer": 1})
    assert type(tagged) is TaggedMessage and tagged.tag == "x" and tagged.extra == {"newer": 1}
    assert Message.from_dict({**data, "tag": "x"}).extra == {"tag": "x"}  # not a field of the base
    assert "from_dict" in vars(Message) and "from_dict" in vars(TaggedMessage)  # compiled for each class


@pytest.mark.parametrize("bad", [None, [], "x", 3])
def test_from_dict_refuses_what_is_not_an_object(bad: Any) -> None:
    with pytest.raises(ValueError, match="Timeline: expected an object"):
        Timeline.from_dict(bad)
    with pytest.raises(ValueError, match="Bookmark: expected an object"):
        Timeline.from_dict({"cursor": 1, "bookmark": bad or 0, "event": {}})
