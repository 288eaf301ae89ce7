"""Operation counters and latency percentiles, recorded by the facade around every public call."""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Literal

from kodestore.models import LatencyStats, OperationCounts

OperationKind = Literal["saves", "loads", "queries", "deletes"]
_KINDS: tuple[OperationKind, ...] = ("saves", "loads", "queries", "deletes")
LATENCY_WINDOW = 10_000  # percentiles over the most recent calls


class Metrics:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record(self, kind: OperationKind, elapsed_ms: float) -> None:
        self._counts[kind] += 1
        self._latencies.append(elapsed_ms)

    def operations(self) -> OperationCounts:
        return OperationCounts(**{kind: self._counts[kind] for kind in _KINDS})

    def latency(self) -> LatencyStats:
        samples = sorted(self._latencies)
        if not samples:
            return LatencyStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return LatencyStats(
            avg_latency_ms=sum(samples) / len(samples),
            min_latency_ms=samples[0],
            max_latency_ms=samples[-1],
            p50_latency_ms=percentile(samples, 50),
            p95_latency_ms=percentile(samples, 95),
            p99_latency_ms=percentile(samples, 99),
        )


def percentile(sorted_samples: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]
