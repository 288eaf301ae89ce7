"""The command line, run in-process: output, exit codes, help for every command."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from kodestore.cli import build_parser, main


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(args, out=out), out.getvalue()


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "agents.db"), "--store-dir", str(tmp_path / "store")]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage: kodestore" in capsys.readouterr().out, name


def test_init_then_check(where: list[str]) -> None:
    code, text = run(["init", "--check", "--json", *where])
    assert code == 1 and orjson.loads(text)["current"] is False
    assert run(["init", *where])[0] == 0
    code, text = run(["init", "--check", "--json", *where])
    assert code == 0 and orjson.loads(text)["pending"] == []


def test_demo_fills_the_store_and_queries_it(where: list[str]) -> None:
    code, text = run(["demo", "--agents", "3", "--turns", "7", *where])
    assert code == 0
    assert "simulated 3 agents x 7 turns" in text
    assert "FAILED" in text and "healthy: True" in text
    code, text = run(["sessions", "--json", *where])
    sessions = [orjson.loads(line) for line in text.splitlines()]
    assert code == 0 and len(sessions) == 3 and all(s["messageCount"] == 14 for s in sessions)
    code, text = run(["stats", "--json", *where])
    stats = orjson.loads(text)
    assert stats["totalMessages"] == 42 and stats["toolCallsByState"]["FAILED"] == 3
    assert run(["check", *where]) == (0, "consistent\n")
    code, text = run(["health", *where])
    assert code == 0 and text.splitlines()[2].startswith("true")
    code, text = run(["events", "demo-000", "--since", "30", *where])
    assert code == 0 and [orjson.loads(x)["bookmark"]["seq"] for x in text.splitlines()] == [
        31,
        32,
        33,
        34,
        35,
    ]


def test_bad_input_is_one_line_and_exit_2(where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["sessions", "--agent", "../etc", *where])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "agent id" in err and "Traceback" not in err
    code, _ = run(["sessions", "--limit", "-3", *where])
    err = capsys.readouterr().err
    assert code == 2 and "limit" in err and err.count("\n") == 1


def test_unparseable_arguments_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sessions", "--limit", "many"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "--limit" in err and "usage" not in err
