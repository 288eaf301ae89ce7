"""The README's examples work as written: every ``python`` and ``bash`` block runs, in order, in a fresh
directory (so ``./data`` is the README's default store) and must succeed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_readme_examples_run_in_order(tmp_path: Path) -> None:
    blocks = BLOCK.findall(README.read_text())
    assert len(blocks) >= 5, "the README lost its examples"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KODE_", "POSTGRES_", "DATABASE_URL"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for number, (language, code) in enumerate(blocks, 1):
        command = (
            [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
        )
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"README block {number} ({language}) failed:\n{code}\n{done.stderr}"
