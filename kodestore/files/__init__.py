"""Files-only storage: append logs for events and history, atomic JSON files for everything else.

Every agent's files live in one directory, ``<base_dir>/<agent_id>/``, shared by ``DiskFiles`` (events,
todos, history, media cache) and ``JsonRecords`` (info, messages, tool calls, snapshots).
"""

from __future__ import annotations

from pathlib import Path

from kodestore.validation import validate_agent_id


def agent_dir(base_dir: Path, agent_id: str) -> Path:
    """The one place an agent id becomes a path; re-validated so no caller can escape ``base_dir``."""
    return base_dir / validate_agent_id(agent_id)
