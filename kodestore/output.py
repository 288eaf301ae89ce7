"""How the command prints rows: an aligned table for people, JSON lines for programs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

import orjson

MAX_CELL = 60


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted columns (``database.connected``)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def emit(
    out: TextIO, rows: Sequence[dict[str, Any]], as_json: bool, columns: Sequence[str] | None = None
) -> None:
    if as_json:
        for row in rows:
            out.write(orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS).decode() + "\n")
        return
    if not rows:
        out.write("(no rows)\n")
        return
    names = list(columns) if columns else list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(name)) for name in names] for row in rows]
    widths = [max(len(name), *(len(r[i]) for r in cells)) for i, name in enumerate(names)]
    out.write("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row_cells in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row_cells, widths, strict=True)).rstrip() + "\n")
