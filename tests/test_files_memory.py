"""``MemoryFiles``: the same observable behaviour as ``DiskFiles``, and stored data nobody can mutate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kodestore.backend import RuntimeFiles
from kodestore.errors import SerializationError
from kodestore.files.disk import DiskFiles
from kodestore.files.memory import MemoryFiles

pytestmark = pytest.mark.asyncio

AWKWARD = "nul \x00 newline \n cr \r emoji 😀 \u2028 中"


def timeline(seq: int, channel: str = "progress") -> dict[str, Any]:
    return {
        "cursor": seq,
        "bookmark": {"seq": seq, "timestamp": 1_700_000_000_000 + seq},
        "event": {"channel": channel, "type": "text", "text": AWKWARD},
    }


async def scenario(files: RuntimeFiles) -> list[Any]:
    """Every method, with what each read returned, for comparing two implementations."""
    seen: list[Any] = []
    await files.open()
    seen.append(await files.check_writable())
    seen.append((await files.load_todos("a"), await files.load_media_cache("a"), await files.agent_ids()))
    for seq in (1, 2, 3, 2, 5):
        await files.append_events("a", timeline(seq, ("progress", "control")[seq % 2]))
    await files.append_events("a", {"cursor": 9, "event": {"channel": "progress"}})  # no bookmark
    await files.append_events("b", timeline(1))
    for since in (None, 1, 2, 5):
        for channel in (None, "progress", "control"):
            seen.append([e async for e in files.read_events("a", since, channel)])
    seen.append(await files.inspect_events("a"))
    seen.append(await files.inspect_events("nobody"))
    await files.save_todos("a", {"todos": [AWKWARD], "version": 1})
    await files.save_media_cache("c", [{"key": AWKWARD}])
    for kind in ("windows", "compressions", "recovered"):
        await files.append_history("d", kind, {"id": f"{kind}-1", "content": AWKWARD})
        await files.append_history("d", kind, {"id": f"{kind}-2"})
        seen.append(await files.load_history("d", kind))
    seen.append((await files.load_todos("a"), await files.load_media_cache("c"), await files.agent_ids()))
    seen.append(await files.size_bytes())
    with pytest.raises(SerializationError) as caught:
        await files.save_todos("e", {"x": {1}})
    seen.append(str(caught.value))
    await files.delete_agent("a", 1)
    await files.delete_agent("zzz", 1)
    seen.append(await files.agent_ids())
    seen.append(([e async for e in files.read_events("a", None, None)], await files.load_todos("a")))
    await files.close()
    return seen


async def test_memory_behaves_like_disk(tmp_path: Path) -> None:
    assert await scenario(MemoryFiles()) == await scenario(DiskFiles(tmp_path))


async def test_stored_values_cannot_be_mutated_through_references() -> None:
    files = MemoryFiles()
    event, media = timeline(1), [{"key": "k"}]
    todos: dict[str, Any] = {"todos": [1]}
    record: dict[str, Any] = {"id": "w", "list": [1]}
    await files.append_events("a", event)
    await files.save_todos("a", todos)
    await files.save_media_cache("a", media)
    await files.append_history("a", "windows", record)
    event["event"]["text"] = "changed after save"
    todos["todos"].append(2)
    media[0]["key"] = "changed after save"
    record["list"].append(2)

    async def load_all() -> list[Any]:
        return [
            [e async for e in files.read_events("a", None, None)],
            await files.load_todos("a"),
            await files.load_media_cache("a"),
            await files.load_history("a", "windows"),
        ]

    expected = [[timeline(1)], {"todos": [1]}, [{"key": "k"}], [{"id": "w", "list": [1]}]]
    first = await load_all()
    assert first == expected
    first[0][0]["event"]["text"] = "changed after load"
    first[1]["todos"].append(3)
    first[2][0]["key"] = "changed after load"
    first[3][0]["list"].append(3)
    assert await load_all() == expected


async def test_size_and_agents_follow_the_data() -> None:
    files = MemoryFiles()
    assert (await files.size_bytes(), await files.agent_ids()) == (0, [])
    await files.append_events("b", timeline(1))
    await files.save_media_cache("a", [])
    size = await files.size_bytes()
    assert size > 0
    await files.append_history("a", "recovered", {"content": "x" * 1000})
    assert await files.size_bytes() > size + 1000
    assert await files.agent_ids() == ["a", "b"]
    await files.delete_agent("a", 1)
    await files.delete_agent("b", 1)
    assert (await files.size_bytes(), await files.agent_ids()) == (0, [])


async def test_failed_save_stores_nothing() -> None:
    files = MemoryFiles()
    with pytest.raises(SerializationError, match=r"event\.bookmark\.timestamp"):
        await files.append_events("a", {"cursor": 1, "bookmark": {"seq": 1, "timestamp": object()}})
    assert await files.agent_ids() == []
    assert [e async for e in files.read_events("a", None, None)] == []
