"""Files-only storage: append logs for events and history, atomic JSON files for everything else.

Every agent's files live in one directory, ``<base_dir>/<agent_id>/``, shared by ``DiskFiles`` (events,
todos, history, media cache) and ``JsonRecords`` (info, messages, tool calls, snapshots).
"""

from __future__ import annotations

import os
from pathlib import Path

from kodestore.files.atomic import ensure_dir, storage_error
from kodestore.validation import validate_agent_id


def agent_dir(base_dir: Path, agent_id: str) -> Path:
    """The one place an agent id becomes a path; re-validated so no caller can escape ``base_dir``."""
    return base_dir / validate_agent_id(agent_id)


def create_base_dir(base_dir: Path) -> None:
    """Create the store's directory (owner-only) when it opens."""
    try:
        ensure_dir(base_dir)
    except OSError as exc:
        raise storage_error("create", base_dir, exc) from exc


def agent_dirs(base_dir: Path) -> list[os.DirEntry[str]]:
    """The subdirectories of ``base_dir``, candidates for agents; none when it does not exist."""
    try:
        with os.scandir(base_dir) as entries:
            return [entry for entry in entries if entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise storage_error("list", base_dir, exc) from exc
