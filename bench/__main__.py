"""``python -m bench``: W1 beside the floor on SQLite and Postgres, W2, W3; a table and a JSON file."""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import sys
import time

from bench import pg, report
from bench.floor import schema_files
from bench.runner import SYSTEMS, Config, Run, log, measure, run_child

BACKENDS = ("sqlite", "postgres")


def parse_args(argv: list[str] | None = None) -> tuple[Config, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--agents", type=int, default=None, help="W1 agents (default 100)")
    parser.add_argument("--turns", type=int, default=None, help="W1 turns per agent (default 40)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per system; medians are reported")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma list of sqlite, postgres")
    parser.add_argument("--dsn", default=pg.default_dsn(), help="Postgres DSN (env KODESTORE_BENCH_DSN)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="also W2 on Postgres at 10,000 agents / 1,000,000 messages and a 1M-event log (minutes)",
    )
    parser.add_argument("--plot", action="store_true", help="write a PNG chart (needs matplotlib)")
    parser.add_argument("--quick", action="store_true", help="20 agents x 20 turns, logs of 1k/10k events")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(f"--backends: unknown {unknown}; choose from {', '.join(BACKENDS)}")
    small = args.quick
    cfg = Config(
        agents=args.agents or (20 if small else 100),
        turns=args.turns or (20 if small else 40),
        rounds=args.rounds,
        backends=backends,
        dsn=args.dsn,
        log_sizes=[1_000, 10_000] if small else [1_000, 100_000],
        scale=args.scale,
    )
    if cfg.agents < 1 or cfg.turns < 1 or cfg.rounds < 1:
        parser.error("--agents, --turns and --rounds must be at least 1")
    if cfg.scale:
        cfg.log_sizes.append(1_000_000)
    return cfg, args.plot


def plan_systems(run: Run) -> dict[str, list[str]]:
    """Which systems run on which backend; what cannot run is recorded with the reason."""
    systems: dict[str, list[str]] = {}
    for backend in run.config.backends:
        if backend == "sqlite":
            systems[backend] = list(SYSTEMS)
            continue
        reason = pg.unavailable(run.config.dsn)
        if reason:
            run.skipped["postgres"] = reason
            continue
        systems[backend] = ["floor", "floor_calls"]
        reason = pg.store_unavailable()
        if reason:
            run.skipped["postgres store"] = reason + "; the Postgres floor still runs"
        else:
            systems[backend] += ["calls", "turn"]
    return systems


def environment(run: Run) -> dict[str, object]:
    env: dict[str, object] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "floor_schema": {backend: schema_files(backend) for backend in run.config.backends},
    }
    if "postgres" not in run.skipped and "postgres" in run.config.backends:
        env["postgres"] = pg.server_settings(run.config.dsn)
    return env


def main(argv: list[str] | None = None) -> int:
    cfg, want_plot = parse_args(argv)
    run = Run(cfg)
    started = time.perf_counter()
    systems = plan_systems(run)
    run.environment = environment(run)
    for what, reason in run.skipped.items():
        log(f"skipping {what}: {reason}")
    log(f"W1: {cfg.agents} agents x {cfg.turns} turns, {cfg.rounds} rounds, {', '.join(systems)}")
    measure(run, systems)
    log(f"W3: read_events(since) at {', '.join(f'{n:,}' for n in cfg.log_sizes)} events")
    try:
        run.eventlog = run_child({"kind": "eventlog", "system": "store", "sizes": cfg.log_sizes})["rows"]
    except RuntimeError as exc:
        run.skipped["W3 log length"] = f"failed: {exc}"
    if cfg.scale:
        if "postgres" in systems and "calls" in systems["postgres"]:
            log(f"W2 at scale on Postgres: {cfg.scale_agents:,} agents x {2 * cfg.scale_turns} messages")
            job = {"kind": "scale", "backend": "postgres", "system": "scale", "dsn": cfg.dsn}
            try:
                run.scale = run_child(job | {"agents": cfg.scale_agents, "turns": cfg.scale_turns})
            except RuntimeError as exc:
                run.skipped["W2 at scale"] = f"failed: {exc}"
        else:
            run.skipped["W2 at scale"] = "needs the Postgres store"
    if hasattr(os, "getloadavg"):
        run.environment["load_average_at_end"] = os.getloadavg()[0]
    stamp = report.timestamp()
    print(report.render(run))
    print(f"\nresults: {report.write_json(run, stamp)}  ({time.perf_counter() - started:.0f} s)")
    if want_plot:
        print(report.plot(run, stamp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
