"""``kodestore sessions | messages | tool-calls | stats``, run in-process against a filled SQLite store."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from kodestore import Message, SqliteStore
from kodestore.cli import main
from kodestore.testing import sample_info, sample_message, sample_tool_call

AGENTS = ["agt-a", "agt-b", "agt-c"]


async def _fill(db: Path, files: Path) -> None:
    async with SqliteStore(db, files) as store:
        for index, agent_id in enumerate(AGENTS):
            info = sample_info(agent_id, template_id="coder" if index < 2 else "writer")
            info.metadata = {"userId": f"u{index}", "team": "core", "level": index}
            await store.save_info(agent_id, info)
            history = [sample_message(i) for i in range(4)]
            history.append(Message("user", [{"type": "image", "source": {"data": "..."}}]))
            await store.save_messages(agent_id, history)
            states = ["COMPLETED", "FAILED", "PENDING"]
            await store.save_tool_call_records(
                agent_id, [sample_tool_call(i, states[i % 3], name="bash_run") for i in range(3)]
            )


@pytest.fixture(scope="module")
def where(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("cli-queries")
    asyncio.run(_fill(root / "agents.db", root / "store"))
    return ["--db", str(root / "agents.db"), "--store-dir", str(root / "store")]


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(args), out=out), out.getvalue()


def json_rows(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def test_sessions_table(where: list[str]) -> None:
    code, text = run("sessions", *where)
    lines = text.splitlines()
    assert code == 0
    assert lines[0].split() == ["agentId", "templateId", "messageCount", "createdAt", "breakpoint"]
    assert [line.split()[0] for line in lines[2:]] == ["agt-c", "agt-b", "agt-a"]  # ties: agent id desc


def test_sessions_filters_and_json(where: list[str]) -> None:
    code, text = run("sessions", *where, "--template", "coder", "--user", "u1", "--json")
    assert code == 0 and [r["agentId"] for r in json_rows(text)] == ["agt-b"]
    code, text = run("sessions", *where, "--metadata", "team=core", "--metadata", "level:=2", "--json")
    assert code == 0 and [r["agentId"] for r in json_rows(text)] == ["agt-c"]
    code, text = run("sessions", *where, "--metadata", "level=2", "--json")  # the string "2" is not 2
    assert code == 0 and text == ""
    code, text = run("sessions", *where, "--sort-by", "message_count", "--order", "asc", "--json")
    assert [r["agentId"] for r in json_rows(text)] == ["agt-a", "agt-b", "agt-c"]


def test_keyset_paging_with_cursor(where: list[str]) -> None:
    seen: list[str] = []
    cursor: list[str] = []
    while True:
        code, text = run("sessions", *where, "--limit", "2", "--json", *cursor)
        rows = json_rows(text)
        assert code == 0
        if not rows:
            break
        seen += [r["agentId"] for r in rows]
        cursor = ["--cursor", rows[-1]["cursor"]]
    assert seen == ["agt-c", "agt-b", "agt-a"]
    code, text = run("messages", *where, "--limit", "5")
    hint = text.splitlines()[-1]
    assert hint.startswith("next page: --cursor ")
    code, text = run("messages", *where, "--limit", "5", "--json", "--cursor", hint.split()[-1])
    # saved a, then b, then c: newest first is c's five messages, then b's
    assert code == 0 and [(r["agentId"], r["seq"]) for r in json_rows(text)] == [
        ("agt-b", s) for s in range(4, -1, -1)
    ]


def test_messages_filters(where: list[str]) -> None:
    code, text = run("messages", *where, "--content-type", "image", "--json")
    assert code == 0 and sorted(r["agentId"] for r in json_rows(text)) == AGENTS
    code, text = run("messages", *where, "--agent", "agt-a", "--role", "assistant", "--json")
    assert [r["seq"] for r in json_rows(text)] == [3, 1]
    code, text = run("messages", *where, "--after", "2999-01-01T00:00:00", "--json")
    assert code == 0 and text == ""
    code, text = run("messages", *where, "--before", "2999-01-01T00:00:00+02:00", "--limit", "1", "--json")
    assert len(json_rows(text)) == 1


def test_tool_calls_filters(where: list[str]) -> None:
    code, text = run("tool-calls", *where, "--state", "FAILED", "--is-error", "true", "--json")
    rows = json_rows(text)
    assert code == 0 and [(r["agentId"], r["id"]) for r in rows] == [(a, "call-1") for a in reversed(AGENTS)]
    code, text = run("tool-calls", *where, "--has-approval", "true", "--tool", "bash_run")
    assert code == 0 and text.count("call-0") == 3 and "call-1" not in text


def test_stats_table_and_json(where: list[str]) -> None:
    code, text = run("stats", *where)
    assert code == 0
    assert "totalSessions          3" in text and "avgMessagesPerSession  5.0" in text
    assert "bash_run  9" in text and "FAILED     3" in text
    code, text = run("stats", *where, "--agent", "agt-a", "--json")
    stats = orjson.loads(text)
    assert stats["totalMessages"] == 5 and stats["toolCallsByState"] == {
        "COMPLETED": 1,
        "FAILED": 1,
        "PENDING": 1,
    }


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["sessions", "--cursor", "not-a-cursor"], "after"),
        (["sessions", "--limit", "-1"], "limit"),
        (["sessions", "--metadata", "team"], "--metadata"),
        (["sessions", "--metadata", "level:={oops"], "--metadata"),
        (["messages", "--after", "yesterday"], "--after"),
        (["messages", "--offset", "2", "--cursor", "x"], "offset"),
        (["tool-calls", "--state", "BROKEN"], "state"),
        (["stats", "--agent", "../etc"], "agent id"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    where: list[str], capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    code, text = run(*args, *where)
    err = capsys.readouterr().err
    assert code == 2 and text == ""
    assert len(err.splitlines()) == 1 and named in err and "Traceback" not in err


def test_unparsable_numbers_are_rejected_by_the_parser(where: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("sessions", *where, "--limit", "many")
    assert exit_info.value.code == 2
