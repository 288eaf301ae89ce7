"""A writer process for the crash and concurrency tests: appends events, prints each acknowledged seq.

Usage: append_writer.py BASE_DIR AGENT_ID FIRST_SEQ COUNT [--step N] [--durability os|fsync]
[--pad BYTES] [--random-pad]. Seqs are FIRST_SEQ, FIRST_SEQ+STEP, ...; a seq is printed (and flushed)
only after ``append_events`` returned, so every printed seq must survive a SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import random

from kodestore.files.disk import DiskFiles


def timeline(seq: int, pad: int) -> dict[str, object]:
    return {
        "cursor": seq,
        "bookmark": {"seq": seq, "timestamp": 1_700_000_000_000 + seq},
        "event": {"channel": ("progress", "control", "monitor")[seq % 3], "type": "text", "pad": "x" * pad},
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_dir")
    parser.add_argument("agent_id")
    parser.add_argument("first_seq", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--durability", choices=("os", "fsync"), default="os")
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--random-pad", action="store_true", help="pad each event with 0..PAD bytes")
    args = parser.parse_args()
    files = DiskFiles(args.base_dir, args.durability)
    await files.open()
    for i in range(args.count):
        seq = args.first_seq + i * args.step
        pad = random.randint(0, args.pad) if args.random_pad else args.pad
        await files.append_events(args.agent_id, timeline(seq, pad))
        print(seq, flush=True)
    await files.close()


if __name__ == "__main__":
    asyncio.run(main())
