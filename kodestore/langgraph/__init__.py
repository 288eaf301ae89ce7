"""LangGraph integration: ``KodeCheckpointSaver`` keeps LangGraph checkpoints in a kodestore store.

Needs the optional extra: ``pip install 'kodestore[langgraph]'``.
"""

try:
    import langgraph.checkpoint.base  # noqa: F401  (fail here, with the hint, not deep inside)
except ModuleNotFoundError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "kodestore.langgraph needs LangGraph's checkpoint package: pip install 'kodestore[langgraph]'"
    ) from exc

from kodestore.langgraph.saver import KodeCheckpointSaver

__all__ = ["KodeCheckpointSaver"]
