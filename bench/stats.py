"""Percentiles and medians over latency samples (nanoseconds in, milliseconds out)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

NS_PER_MS = 1_000_000


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return float(ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1])


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def latency_summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50 / p90 / p99 / max / mean in milliseconds."""
    ms = [s / NS_PER_MS for s in samples_ns]
    return {
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=0.0),
        "mean_ms": statistics.fmean(ms) if ms else 0.0,
    }


def decile_labels(turns: int) -> list[str]:
    """``"1-4"``, ``"5-8"``, ... : the 1-based turn range of each decile (fewer with < 10 turns)."""
    groups = _decile_groups(turns)
    return [f"{g[0] + 1}-{g[-1] + 1}" if len(g) > 1 else str(g[0] + 1) for g in groups]


def _decile_groups(turns: int) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for turn in range(turns):
        groups.setdefault(turn * 10 // turns, []).append(turn)
    return [groups[k] for k in sorted(groups)]


def decile_p50s(samples_ns: Sequence[int], turn_of_sample: Sequence[int], turns: int) -> list[float]:
    """Median latency (ms) of the samples in each turn decile."""
    by_turn: dict[int, list[float]] = {}
    for sample, turn in zip(samples_ns, turn_of_sample, strict=True):
        by_turn.setdefault(turn, []).append(sample / NS_PER_MS)
    return [median([s for turn in group for s in by_turn.get(turn, [])]) for group in _decile_groups(turns)]
