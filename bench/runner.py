"""Plans the measurements, runs each in a child process, and reduces rounds to medians."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.stats import median
from kodestore.config import redact_dsn

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("floor", "floor_calls", "calls", "turn")
SYSTEM_NAMES = {
    "floor": "floor",
    "floor_calls": "floor, 4-call sequence",  # a reference: the runtime's calls, nothing added
    "calls": "kodestore (4 calls)",
    "turn": "kodestore save_turn",
}
TARGETS = {("sqlite", "calls"): 1.5, ("sqlite", "turn"): 1.2, ("postgres", "calls"): 2.0}
TARGETS[("postgres", "turn")] = 1.2
CHILD_TIMEOUT_S = 3600


@dataclass
class Config:
    agents: int = 100
    turns: int = 40
    rounds: int = 3
    backends: list[str] = field(default_factory=lambda: ["sqlite", "postgres"])
    dsn: str = ""
    log_sizes: list[int] = field(default_factory=lambda: [1_000, 100_000])
    scale: bool = False
    scale_agents: int = 10_000
    scale_turns: int = 50


@dataclass
class Run:
    """Everything one invocation measured: raw rounds and their medians."""

    config: Config
    skipped: dict[str, str] = field(default_factory=dict)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    eventlog: list[dict[str, Any]] = field(default_factory=list)
    scale: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"]["dsn"] = redact_dsn(self.config.dsn)
        data["summary"] = {backend: summarize(self, backend) for backend in self.rounds}
        return data


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in a fresh interpreter; its last stdout line is the JSON result."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.child", orjson.dumps(job).decode()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-6:]
        raise RuntimeError("\n".join(tail))
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(run: Run, systems: dict[str, list[str]]) -> None:
    """W1 (+ W2/W3 after the 4-call run) for every backend and system, rounds interleaved."""
    cfg = run.config
    for backend, names in systems.items():
        run.rounds[backend] = {name: [] for name in names}
    for r in range(cfg.rounds):
        for backend, names in systems.items():
            for system in names:
                failed = run.skipped.get(f"{backend} {SYSTEM_NAMES[system]}")
                if failed:
                    continue
                job = {
                    "kind": "w1",
                    "backend": backend,
                    "system": system,
                    "agents": cfg.agents,
                    "turns": cfg.turns,
                    "dsn": cfg.dsn,
                    "readback": system == "calls",
                }
                started = time.perf_counter()
                try:
                    result = run_child(job)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    # one broken system must not hide the others' numbers: report it and go on
                    run.skipped[f"{backend} {SYSTEM_NAMES[system]}"] = f"failed in round {r + 1}: {exc}"
                    log(f"  round {r + 1}/{cfg.rounds} {backend:8} {SYSTEM_NAMES[system]:20} FAILED")
                    continue
                run.rounds[backend][system].append(result)
                log(
                    f"  round {r + 1}/{cfg.rounds} {backend:8} {SYSTEM_NAMES[system]:20}"
                    f" W1 {result['wall_s']:6.2f} s  ({time.perf_counter() - started:5.1f} s with setup)"
                )


def summarize(run: Run, backend: str) -> dict[str, Any]:
    """Medians over rounds for each system, and each store system's ratio to the floor.

    The ratio is the median of per-round ratios (store wall time / floor wall time of the same round),
    which cancels slow drifts of the machine between rounds."""
    rounds = run.rounds.get(backend, {})
    out: dict[str, Any] = {}
    for system, results in rounds.items():
        if not results:
            continue
        keys = (
            "turns_per_s",
            "wall_s",
            "cpu_s",
            "p50_ms",
            "p99_ms",
            "disk_bytes",
            "rss_peak_kb",
            "rss_start_kb",
        )
        row: dict[str, Any] = {key: median([r[key] for r in results]) for key in keys}
        if all("wal_bytes" in r for r in results):
            row["wal_bytes"] = median([r["wal_bytes"] for r in results])
        deciles = zip(*(r["decile_p50_ms"] for r in results), strict=True)
        row["decile_p50_ms"] = [median(list(values)) for values in deciles]
        floor = rounds.get("floor")
        if system != "floor" and floor:
            ratios = [r["wall_s"] / f["wall_s"] for r, f in zip(results, floor, strict=False)]
            row["ratio"] = median(ratios)
            row["cpu_ratio"] = median([r["cpu_s"] / f["cpu_s"] for r, f in zip(results, floor, strict=False)])
            row["target"] = TARGETS.get((backend, system))
        out[system] = row
        if "w2" in results[0]:
            out["w2"] = {
                name: {"p50_ms": median([r["w2"][name]["p50_ms"] for r in results])}
                | {"rows": results[0]["w2"][name]["rows"]}
                for name in results[0]["w2"]
            }
            out["w3"] = {
                "agent_p50_ms": median([r["w3"]["agent_p50_ms"] for r in results]),
                "agent_p99_ms": median([r["w3"]["agent_p99_ms"] for r in results]),
                "steps_p50_ms": {
                    step: median([r["w3"]["steps_p50_ms"][step] for r in results])
                    for step in results[0]["w3"]["steps_p50_ms"]
                },
            }
    return out
