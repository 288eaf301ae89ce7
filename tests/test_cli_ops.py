"""The operations subcommands and the cron scripts, run for real: output, exit codes, help."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from test_ops_kode_json import write_sdk_agent

from kodestore.cli import main
from kodestore.cli_ops import parse_age

OPS_COMMANDS = ["backup", "restore", "migrate", "prune", "import-kode-json"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_store_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("KODE_", "POSTGRES_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    return main(args, out=out), out.getvalue()


def rows(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines()]


def where(tmp_path: Path, name: str) -> list[str]:
    return ["--db", str(tmp_path / name / "agents.db"), "--store-dir", str(tmp_path / name / "files")]


@pytest.fixture
def demo(tmp_path: Path) -> list[str]:
    source = where(tmp_path, "source")
    assert run(["demo", "--agents", "4", "--turns", "3", *source])[0] == 0
    return source


@pytest.mark.parametrize("name", OPS_COMMANDS)
def test_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: kodestore {name}" in text and "--json" in text and "--db" in text


def test_backup_then_restore(tmp_path: Path, demo: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["backup", str(tmp_path / "bk"), *demo])
    assert code == 0
    lines = text.splitlines()
    assert lines[0].split() == ["backup", "agents", "messages", "toolCalls", "snapshots", "events", "bytes"]
    assert lines[2].split()[1:6] == ["4", "24", "12", "0", "60"]
    code, text = run(["restore", "--verify-only", "--json", str(tmp_path / "bk")])
    assert code == 0 and rows(text)[0]["verified"] is True
    target = where(tmp_path, "target")
    code, text = run(["restore", str(tmp_path / "bk"), "--json", *target])
    assert code == 0 and rows(text)[0]["agents"] == 4 and rows(text)[0]["sourceKind"] == "sqlite"
    assert run(["check", *target]) == (0, "consistent\n")
    capsys.readouterr()
    assert run(["restore", str(tmp_path / "bk"), *target]) == (2, "")
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already holds 4 agent(s)" in error
    assert run(["restore", str(tmp_path / "bk"), "--overwrite", *target])[0] == 0


def test_backup_and_restore_errors_are_one_line(
    tmp_path: Path, demo: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["backup", str(tmp_path / "bk"), *demo])[0] == 0
    capsys.readouterr()
    assert run(["backup", str(tmp_path / "bk"), *demo]) == (2, "")
    assert "not an empty directory" in capsys.readouterr().err
    events = tmp_path / "bk" / "events.jsonl"
    events.write_bytes(events.read_bytes()[:-10])
    assert run(["restore", str(tmp_path / "bk"), *where(tmp_path, "t")]) == (2, "")
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "does not match the manifest" in error
    assert run(["restore", str(tmp_path / "nothing"), *where(tmp_path, "t")])[0] == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_migrate_to_json_and_back(
    tmp_path: Path, demo: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(
        ["migrate", *demo, "--to-type", "json", "--to-store-dir", str(tmp_path / "json"), "--json"]
    )
    assert code == 0 and rows(text) == [
        {"target": "json", "agents": 4, "messages": 24, "toolCalls": 12, "events": 60, "snapshots": 0}
    ]
    back = where(tmp_path, "back")
    code, text = run(
        [
            *["migrate", "--type", "json", "--store-dir", str(tmp_path / "json")],
            *["--to-type", "sqlite", "--to-db", back[1], "--to-store-dir", back[3]],
        ]
    )
    assert code == 0 and "sqlite" in text
    code, text = run(["sessions", "--json", *back])
    assert len(rows(text)) == 4
    capsys.readouterr()
    assert run(["migrate", *demo, "--to-type", "sqlite", "--to-db", str(tmp_path / "x.db")])[0] == 2
    assert "needs --to-store-dir" in capsys.readouterr().err
    assert (
        run(["migrate", *demo, "--to-type", "sqlite", "--to-db", demo[1], "--to-store-dir", demo[3]])[0] == 2
    )
    assert "target is the source" in capsys.readouterr().err


def test_prune(tmp_path: Path, demo: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(["prune", "--keep-latest", "1", "--dry-run", *demo])
    assert code == 0
    assert text.splitlines()[0].split() == ["agentId", "action"]
    assert text.count("would delete") == 1  # demo templates: coder x2, researcher, reviewer
    code, text = run(["prune", "--older-than", "0s", "--template", "coder", "--json", *demo])
    assert code == 0 and rows(text) == [
        {"agentId": "demo-000", "action": "deleted"},
        {"agentId": "demo-003", "action": "deleted"},
    ]
    assert run(["prune", "--older-than", "30d", *demo]) == (0, "(no rows)\n")
    capsys.readouterr()
    assert run(["prune", *demo]) == (2, "")
    assert "--older-than, --keep-latest or both" in capsys.readouterr().err
    assert run(["prune", "--older-than", "soon", *demo]) == (2, "")
    assert "expected an age like 30d" in capsys.readouterr().err


def test_parse_age() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age(" 12h ") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="--older-than"):
        parse_age("-3d")


def test_import_kode_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_sdk_agent(tmp_path / "sdk", "agt-1")
    target = where(tmp_path, "t")
    code, text = run(["import-kode-json", str(tmp_path / "sdk"), "--json", *target])
    assert code == 0
    assert rows(text) == [
        {"agents": 1, "messages": 4, "toolCalls": 2, "events": 9, "skippedEventLines": 1, "skippedAgents": 0}
    ]
    (tmp_path / "sdk" / "no-meta").mkdir()
    code, text = run(["import-kode-json", str(tmp_path / "sdk"), *target])
    assert code == 1 and "skipped:" in text and "no-meta" in text and "no meta.json" in text
    capsys.readouterr()
    assert run(["import-kode-json", str(tmp_path / "nowhere"), *target]) == (2, "")
    assert "is not a directory" in capsys.readouterr().err


def _script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KODESTORE": f"{sys.executable} -m kodestore",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_backup_script_rotates_and_restore_script_takes_the_newest(tmp_path: Path, demo: list[str]) -> None:
    root = tmp_path / "backups"
    for _ in range(3):
        result = _script("backup.sh", str(root), "2", *demo)
        assert result.returncode == 0, result.stderr
    (root / ".kodestore-x.partial-abc").mkdir()  # left by a killed run
    (root / "unrelated").mkdir()
    assert _script("backup.sh", str(root), "2", *demo).returncode == 0
    kept = sorted(p.name for p in root.iterdir() if p.name.startswith("kodestore-"))
    assert (
        len(kept) == 2 and (root / "unrelated").is_dir() and not (root / ".kodestore-x.partial-abc").exists()
    )
    target = where(tmp_path, "restored")
    result = _script("restore.sh", str(root), *target)
    assert result.returncode == 0 and f"restoring {root / kept[-1]}" in result.stderr
    assert _script("restore.sh", str(root), *target).returncode == 2  # refuses: target holds agents
    assert _script("restore.sh", str(root), "--overwrite", *target).returncode == 0
    assert _script("restore.sh", str(tmp_path / "empty")).returncode == 2
    assert _script("backup.sh").returncode == 2
    for name in ("backup.sh", "restore.sh"):
        shown = _script(name, "--help")
        assert shown.returncode == 0 and "Usage:" in shown.stdout
    assert _script("backup.sh", str(root), "0").returncode == 2
