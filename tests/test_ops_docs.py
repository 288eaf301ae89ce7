"""The ``bash`` and ``python`` examples of ``docs/operations.md`` run as written, in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_ops_kode_json import write_sdk_agent

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "operations.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_operations_examples_run(tmp_path: Path) -> None:
    blocks = BLOCK.findall(DOC.read_text("utf-8"))
    assert len(blocks) >= 8
    (tmp_path / "scripts").symlink_to(ROOT / "scripts")
    write_sdk_agent(tmp_path / "sdk-store", "agt-sdk")
    command = f"{sys.executable} -m kodestore"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("KODE_", "POSTGRES_"))},
        "KODESTORE": command,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    prelude = f'set -euo pipefail\nkodestore() {{ {command} "$@"; }}\n'
    for language, code in blocks:
        argv = ["bash", "-c", prelude + code] if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{language} example failed:\n{code}\n{result.stdout}\n{result.stderr}"
    assert len(list((tmp_path / "backups").glob("kodestore-*"))) == 1
    assert (tmp_path / "restored" / "agents.db").exists() and (tmp_path / "imported" / "agents.db").exists()
    assert (tmp_path / "py-restored" / "agents.db").exists() and (tmp_path / "mirror").is_dir()
