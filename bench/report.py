"""The printed tables, the JSON results file and the optional PNG chart."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.runner import SYSTEM_NAMES, Run
from bench.stats import decile_labels

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def _disk(row: dict[str, Any]) -> str:
    """Bytes on disk, with the SQLite write-ahead log's share when there is one."""
    wal = row.get("wal_bytes")
    return _mb(row["disk_bytes"]) if wal is None else f"{_mb(row['disk_bytes'])} ({_mb(wal)} WAL)"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def w1_table(summary: dict[str, Any]) -> str:
    header = [
        "W1",
        "turns/s",
        "p50 ms",
        "p99 ms",
        "CPU s",
        "peak RSS MB",
        "disk MB",
        "x floor",
        "CPU x",
        "target",
    ]
    rows = []
    for system, name in SYSTEM_NAMES.items():
        row = summary.get(system)
        if row is None:
            continue
        ratio = row.get("ratio")
        target = row.get("target")
        verdict = "" if target is None else f"<= {target} {'ok' if ratio <= target else 'MISSED'}"
        rows.append(
            [
                name,
                f"{row['turns_per_s']:,.0f}",
                f"{row['p50_ms']:.3f}",
                f"{row['p99_ms']:.3f}",
                f"{row['cpu_s']:.2f}",
                f"{row['rss_peak_kb'] / 1024:.0f}",
                _disk(row),
                "1.00" if ratio is None else f"{ratio:.2f}",
                "1.00" if ratio is None else f"{row['cpu_ratio']:.2f}",
                verdict,
            ]
        )
    return _table(header, rows)


def decile_table(summary: dict[str, Any], turns: int) -> str:
    labels = decile_labels(turns)
    rows = [
        [SYSTEM_NAMES[system], *(f"{v:.3f}" for v in summary[system]["decile_p50_ms"])]
        for system in SYSTEM_NAMES
        if system in summary
    ]
    return _table(["p50 ms by turn", *labels], rows)


def readback_tables(summary: dict[str, Any]) -> str:
    if "w2" not in summary:
        return ""
    w2 = _table(
        ["W2 query", "p50 ms", "rows"],
        [[name, f"{row['p50_ms']:.3f}", f"{row['rows']:.0f}"] for name, row in summary["w2"].items()],
    )
    w3 = summary["w3"]
    steps = [[f"  {step}", f"{ms:.3f}"] for step, ms in w3["steps_p50_ms"].items()]
    w3_table = _table(
        ["W3 resume, per agent", "p50 ms"],
        [["all four calls", f"{w3['agent_p50_ms']:.3f}"], *steps],
    )
    return f"{w2}\n\n{w3_table}"


def eventlog_table(rows: list[dict[str, Any]]) -> str:
    return _table(
        [
            "W3 one log",
            "since p50 ms",
            "since KB read",
            "full read ms",
            "RSS growth KB",
            "log MB",
            "append us",
        ],
        [
            [
                f"{row['events']:,} events",
                f"{row['since_p50_ms']:.3f}",
                "?" if row.get("since_bytes_read") is None else f"{row['since_bytes_read'] / 1024:.0f}",
                f"{row['full_read_ms']:.1f}",
                f"{row['full_read_rss_growth_kb']:,}",
                _mb(row["log_bytes"]),
                f"{row['append_us']:.1f}",
            ]
            for row in rows
        ],
    )


def render(run: Run) -> str:
    cfg = run.config
    parts = []
    data = run.to_json()["summary"]
    for backend, summary in data.items():
        parts.append(
            f"== {backend}: W1 {cfg.agents} agents x {cfg.turns} turns, medians of {cfg.rounds} rounds =="
        )
        parts += [w1_table(summary), decile_table(summary, cfg.turns), readback_tables(summary)]
    busy = busy_note(run.environment)
    if busy:
        parts.append(busy)
    for what, reason in run.skipped.items():
        parts.append(f"skipped {what}: " + reason.replace("\n", "\n    "))
    if run.eventlog:
        parts += [
            "== read_events(since) vs log length (sqlite store, JSONL side) ==",
            eventlog_table(run.eventlog),
        ]
    if run.scale:
        parts += [scale_table(run.scale)]
    return "\n\n".join(part for part in parts if part)


def busy_note(environment: dict[str, Any]) -> str:
    """A warning when other processes used the CPUs as the bench started: wall-time ratios are noisy."""
    cpus = environment.get("cpus") or 1
    load = environment.get("load_average_at_start")
    if not isinstance(load, float) or load <= 0.25 * cpus:
        return ""
    return (
        f"note: the machine was busy before the bench started (1-minute load average {load:.1f} on {cpus}"
        " CPUs); wall-time ratios are noisy, the CPU s column less so"
    )


def scale_table(scale: dict[str, Any]) -> str:
    title = (
        f"== W2 at scale ({scale['backend']}): {scale['agents']:,} agents, {scale['messages']:,} messages,"
        f" loaded in {scale['load_s']:.0f} s =="
    )
    loaded = scale.get("w2_as_loaded", {})
    rows = [
        [
            name,
            f"{loaded[name]['p50_ms']:.3f}" if name in loaded else "",
            f"{row['p50_ms']:.3f}",
            f"{row['p99_ms']:.3f}",
        ]
        for name, row in scale["w2"].items()
    ]
    header = ["query", "p50 ms as loaded", "p50 ms after ANALYZE", "p99 ms after ANALYZE"]
    return f"{title}\n" + _table(header, rows)


def write_json(run: Run, stamp: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stamp}.json"
    path.write_bytes(orjson.dumps(run.to_json(), option=orjson.OPT_INDENT_2))
    return path


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def plot(run: Run, stamp: str) -> str:
    """A PNG of turns/s and of p50 by turn decile, when matplotlib is installed; says what it did."""
    if importlib.util.find_spec("matplotlib") is None:
        return "no chart: matplotlib is not installed (pip install matplotlib; not a dependency)"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = run.to_json()["summary"]
    fig, axes = plt.subplots(len(summary), 2, figsize=(11, 3.6 * len(summary)), squeeze=False)
    labels = decile_labels(run.config.turns)
    for (backend, rows), (bars, lines) in zip(summary.items(), axes, strict=True):
        systems = [s for s in SYSTEM_NAMES if s in rows]
        bars.bar([SYSTEM_NAMES[s] for s in systems], [rows[s]["turns_per_s"] for s in systems])
        bars.set_title(f"{backend}: W1 turns/s (higher is better)")
        for system in systems:
            lines.plot(labels, rows[system]["decile_p50_ms"], marker="o", label=SYSTEM_NAMES[system])
        lines.set_title(f"{backend}: p50 ms per turn by turn decile")
        lines.set_ylim(bottom=0)
        lines.legend()
    fig.tight_layout()
    path = RESULTS_DIR / f"{stamp}.png"
    fig.savefig(path, dpi=110)
    return f"chart: {path}"
