"""Hypothesis strategies for text that stresses the Postgres NUL-safe codec."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# the pieces every escape bug is made of: NUL, the stuffing characters, backslash runs, JSON escapes
# written literally (whole and cut short), and characters on both sides of them in code-point order
FRAGMENTS = ["\x00", "\x01", "\x02", "\ue000", "\\", "\\\\", "\\u0000", "\\u0001", "\\u0002", "\\u000"]
FRAGMENTS += ["\\\\u0000", "\\\\\\u0001", "u0000", "0", "1", "2", '"', "a", "é", "\U0001f600"]

tricky_text = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=12,
)
