"""A deleted agent's tombstone: ``<agent dir>/.deleted``, holding the deletion time (epoch ms).

It keeps a deletion from being undone by a process that still held the agent: such a process would
re-create the agent's directory with its next append. Files refuse any write for a tombstoned agent;
a later ``save_info`` that re-creates the agent removes the tombstone.
"""

from __future__ import annotations

import os
from pathlib import Path

from kodestore.config import Durability
from kodestore.errors import AgentDeleted
from kodestore.files.atomic import storage_error, write_atomic

TOMBSTONE_FILE = ".deleted"


def deleted_at(directory: Path) -> int | None:
    """When the agent of ``directory`` was deleted, or ``None`` if it was not (or was re-created)."""
    try:
        return int((directory / TOMBSTONE_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return 0  # unreadable: still a tombstone, of unknown age


def refuse_if_deleted(directory: Path) -> None:
    if deleted_at(directory) is not None:
        raise AgentDeleted(
            f"agent {directory.name!r} was deleted; a late write was refused (save_info re-creates it)"
        )


def bury(directory: Path, at_ms: int, durability: Durability) -> None:
    write_atomic(directory / TOMBSTONE_FILE, str(at_ms).encode(), durability)


def revive(directory: Path) -> None:
    try:
        os.unlink(directory / TOMBSTONE_FILE)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise storage_error("remove", directory / TOMBSTONE_FILE, exc) from exc
