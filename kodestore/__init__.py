"""kodestore: persistent runtime state for AI agents — SQLite or PostgreSQL plus JSONL files.

Start with ``store = await kodestore.create_extended_store()``; see the README for the rest.
"""

from kodestore.backend import AgentRecords
from kodestore.db.queries import cursor_of
from kodestore.errors import (
    AgentDeleted,
    AgentNotFound,
    ConfigError,
    InvalidAgentId,
    KodeStoreError,
    LockLost,
    LockTimeout,
    SerializationError,
    StorageError,
    StoreClosed,
)
from kodestore.extended import ExtendedStore, QueryableStore
from kodestore.facade import Store
from kodestore.factory import create_extended_store, create_store
from kodestore.models import (
    AgentInfo,
    AgentStats,
    Bookmark,
    CompressionRecord,
    ConsistencyCheckResult,
    Feedback,
    HistoryWindow,
    MediaCacheRecord,
    Message,
    MessageRecord,
    RecoveredFile,
    SessionInfo,
    Snapshot,
    StoreHealthStatus,
    StoreMetrics,
    SuspendedState,
    Timeline,
    TodoSnapshot,
    ToolCallRecord,
    ToolCallState,
)
from kodestore.stores import JSONStore, MemoryStore, SqliteStore

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # PostgresStore loads psycopg; only touch it when someone asks for it
    if name == "PostgresStore":
        from kodestore.db.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'kodestore' has no attribute {name!r}")


__all__ = [
    "AgentDeleted",
    "AgentRecords",
    "AgentInfo",
    "AgentNotFound",
    "AgentStats",
    "Bookmark",
    "CompressionRecord",
    "ConfigError",
    "ConsistencyCheckResult",
    "ExtendedStore",
    "Feedback",
    "HistoryWindow",
    "InvalidAgentId",
    "JSONStore",
    "KodeStoreError",
    "LockLost",
    "LockTimeout",
    "MediaCacheRecord",
    "MemoryStore",
    "Message",
    "MessageRecord",
    "PostgresStore",
    "QueryableStore",
    "RecoveredFile",
    "SerializationError",
    "SessionInfo",
    "Snapshot",
    "SqliteStore",
    "StorageError",
    "Store",
    "StoreClosed",
    "StoreHealthStatus",
    "StoreMetrics",
    "SuspendedState",
    "Timeline",
    "TodoSnapshot",
    "ToolCallRecord",
    "ToolCallState",
    "create_extended_store",
    "cursor_of",
    "create_store",
]
