"""The exception hierarchy: every error kodestore raises is a ``KodeStoreError``."""

from __future__ import annotations


class KodeStoreError(Exception):
    """Base of every kodestore error; driver errors are chained to one of these."""


class InvalidAgentId(KodeStoreError, ValueError):
    """An agent id that is empty, too long, or could escape the store (``/``, ``..``, control chars)."""


class AgentNotFound(KodeStoreError, KeyError):
    """Saving runtime state for an agent that has no info yet."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "agent not found"


class AgentDeleted(AgentNotFound):
    """A late write for a deleted agent (an info created before the deletion, or an append from a
    process that still held it): refused so the deletion sticks."""


class LockTimeout(KodeStoreError, TimeoutError):
    """The agent lock was not acquired within the timeout."""


class LockLost(KodeStoreError):
    """The agent lock ended before its release (its Postgres session died): another holder may have
    written the agent in between, so the holder's last writes were not exclusive."""


class StoreClosed(KodeStoreError):
    """A call on a store after ``close()``."""


class ConfigError(KodeStoreError, ValueError):
    """Bad options or environment; the message names the option or variable."""


class SerializationError(KodeStoreError, ValueError):
    """A value that cannot be stored as JSON; the message names its field path."""


class StorageError(KodeStoreError, OSError):
    """The disk or database refused a write (full, read-only, unreachable)."""
