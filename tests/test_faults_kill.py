"""SIGKILL a writer process at random points of a stream of turns; nothing it acknowledged may be lost.

Each backend gets ``STORES`` fresh stores; on each, ``KILLS_PER_STORE`` writer processes run one after
the other, each restarting from what the previous one left (as a restarted runtime would) and killed
after a seeded random delay: while it opens the store (connecting, migrating a new store) or early,
mid or late in its stream of turns. After every kill the store is reopened here and every
acknowledgement of every writer so far is checked (``fault_check.verify``); a last writer then runs
to completion on the crashed-on store. Half the stores use ``durability="fsync"`` (group commit).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.fault_check import WriterRun, drop_spec, json_totals, new_spec, verify_spec
from helpers.fault_writer import Ack

SEED = int(os.environ.get("KODESTORE_FAULT_SEED", "20240605"))
STORES = 4
KILLS_PER_STORE = 6
AGENTS = ("agent-a", "agent-b")
# seconds after the writer's "opening" line (inside open, migrations, state reload) or "ready" line
PHASES = {"opening": (0.0, 0.015), "early": (0.0, 0.08), "mid": (0.08, 0.35), "late": (0.35, 0.8)}
SCHEDULE = ("opening", "early", "early", "mid", "mid", "late")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_sigkill_loses_no_acknowledged_write(
    backend: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """24 kill points per backend; totals go to ``record_property`` and ``fault-kill-totals.json``."""
    rng = random.Random(f"{SEED}-{backend}")
    totals: Counter[str] = Counter()
    started = time.monotonic()
    for store_no in range(STORES):
        spec = new_spec(backend, tmp_path / f"store{store_no}", "fsync" if store_no % 2 else "os")
        acks: list[Ack] = []
        try:
            for kill_no, phase in enumerate(_schedule(rng, open_first=store_no % 2 == 0)):
                run = await WriterRun.start(
                    spec, AGENTS, "--seed", str(rng.randrange(2**31)), "--writer", f"w{kill_no}"
                )
                try:
                    await run.wait_for("opening" if phase == "opening" else "ready")
                    await asyncio.sleep(rng.uniform(*PHASES[phase]))
                finally:
                    await run.kill()
                assert run.proc.returncode == -signal.SIGKILL, f"writer died on its own: {run.error_text()}"
                totals["kill_points"] += 1
                totals[f"kills_{phase}"] += 1
                totals["kills_before_ready"] += not run.saw("ready")
                acks.extend(run.acks)
                verified = await verify_spec(spec, acks)
                totals["ack_checks"] += verified.acks_checked
                totals["torn_tails_repaired"] += verified.torn_tails_repaired
            final = await WriterRun.start(spec, AGENTS, "--turns", "3", "--writer", "final")
            assert await final.finish() == 0, f"writer after the crashes failed: {final.error_text()}"
            acks.extend(final.acks)
            verified = await verify_spec(spec, acks)
            totals["ack_checks"] += verified.acks_checked
            totals["acknowledged_writes"] += len(acks)
            for kind, count in Counter(ack["k"] for ack in acks).items():
                totals[f"acknowledged_{kind}"] += count
        finally:
            await drop_spec(spec)
    totals["seconds"] = round(time.monotonic() - started)
    for key, value in sorted(totals.items()):
        record_property(key, value)
    json_totals(tmp_path / "fault-kill-totals.json", {"backend": backend, "seed": SEED, **totals})
    print(f"\n{backend} kill totals: {dict(sorted(totals.items()))}")
    assert totals["kill_points"] == STORES * KILLS_PER_STORE
    assert totals["kills_before_ready"] > 0, "no kill landed while the store was being opened"
    assert totals["acknowledged_writes"] > 1000, f"too few writes to mean anything: {totals}"


def _schedule(rng: random.Random, open_first: bool) -> list[str]:
    """Every phase in each store's run; half the stores are first killed while being created."""
    phases = list(SCHEDULE)
    rng.shuffle(phases)
    if open_first:
        phases.remove("opening")
        phases.insert(0, "opening")
    return phases
