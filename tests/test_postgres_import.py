"""psycopg loads only when a Postgres store is made, never at ``import kodestore``."""

from __future__ import annotations

import subprocess
import sys

from helpers.pg_env import subprocess_env

_CHECK = """
import sys
import kodestore
from kodestore import factory, stores
assert "psycopg" not in sys.modules, sorted(m for m in sys.modules if m.startswith("psycopg"))
kodestore.PostgresStore  # the lazy attribute loads the driver
assert "psycopg" in sys.modules
"""


def test_import_kodestore_does_not_import_psycopg() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], env=subprocess_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
