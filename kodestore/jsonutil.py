"""JSON encoding for everything kodestore writes: orjson, strict, with errors that name the field."""

from __future__ import annotations

from typing import Any

import orjson

from kodestore.errors import SerializationError

# datetime and dataclass instances would be encoded one way and decoded another (as strings, dicts);
# refusing them keeps the "what you save is what you load" promise.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: Any, what: str) -> bytes:
    """Encode ``value``; failures raise ``SerializationError`` naming the path (``messages[3].content``)."""
    try:
        return orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        path, reason = _first_unencodable(value, what)
        raise SerializationError(f"cannot store {path} as JSON: {reason or exc}") from exc


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(data)


def _first_unencodable(value: Any, path: str) -> tuple[str, str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path}[{key!r}]", f"key of type {type(key).__name__} (JSON keys are strings)"
            found = _first_unencodable(item, f"{path}.{key}")
            if found[1]:
                return found
        return path, ""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _first_unencodable(item, f"{path}[{index}]")
            if found[1]:
                return found
        return path, ""
    try:
        orjson.dumps(value, option=_OPTIONS)
    except TypeError as exc:
        return path, f"{type(value).__name__} value ({exc})"
    return path, ""
