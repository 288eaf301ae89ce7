"""The operations subcommands of ``kodestore``: backup, restore, migrate, prune, import-kode-json.

Each one parses its options, opens the store the common flags (or ``KODE_*`` variables) describe,
calls one function of ``kodestore.ops`` with a progress bar (drawn only on a terminal) and prints a
table, or JSON lines with ``--json``. Bad input raises ``ValueError`` / ``KodeStoreError``, which
``kodestore.cli.main`` turns into a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from kodestore import ops, output
from kodestore.cli import command, int_at_least, open_store, store_options
from kodestore.config import STORE_TYPES, resolve_options
from kodestore.errors import KodeStoreError
from kodestore.factory import build_store

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta | datetime:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a timedelta; an ISO date or datetime (UTC if naive)."""
    match = _AGE.match(text)
    if match:
        return timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--older-than: expected an age like 30d, 12h, 90m, 45s, 2w or an ISO date, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _target_options(args: argparse.Namespace) -> dict[str, Any]:
    """The migration target from ``--to-*`` flags only: the environment describes the source."""
    needed = {
        "sqlite": ("to_db", "to_store_dir"),
        "postgres": ("to_dsn", "to_store_dir"),
        "json": ("to_store_dir",),
        "memory": (),
    }[args.to_type]
    missing = [f"--{name.replace('_', '-')}" for name in needed if not getattr(args, name)]
    if missing:
        raise ValueError(f"a {args.to_type} target needs {' and '.join(missing)}")
    return store_options(args, prefix="to_")


def _same_place(source: dict[str, Any], target: dict[str, Any]) -> bool:
    a, b = resolve_options(source), resolve_options(target)
    if a.type == "memory" or b.type == "memory":
        return False
    if Path(a.file_store_base_dir).resolve() == Path(b.file_store_base_dir).resolve():
        return True
    return a.type == b.type == "sqlite" and Path(a.db_path).resolve() == Path(b.db_path).resolve()


@command("backup")
async def _backup(args: argparse.Namespace, out: TextIO) -> int:
    async with await open_store(args) as store:
        with ops.ProgressBar("backup") as bar:
            manifest = await ops.backup(store, args.dest, progress=bar)
    size = sum(int(f["size"]) for f in manifest["files"].values())
    row = {"backup": str(args.dest), "agents": manifest["agents"], **manifest["counts"], "bytes": size}
    output.emit(out, [row], args.json)
    return 0


@command("restore")
async def _restore(args: argparse.Namespace, out: TextIO) -> int:
    if args.verify_only:
        manifest = ops.verify_backup(args.src)
        row = {"backup": str(args.src), "verified": True, "agents": manifest["agents"]}
        output.emit(out, [row], args.json)
        return 0
    with ops.ProgressBar("restore") as bar:
        restored = await ops.restore(args.src, overwrite=args.overwrite, progress=bar, **store_options(args))
    output.emit(out, [{"backup": str(args.src), **restored}], args.json)
    return 0


@command("migrate")
async def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    target_options = _target_options(args)
    if _same_place(store_options(args), target_options):
        raise ValueError("the migration target is the source store; give --to-* flags for another store")
    target = build_store(resolve_options(target_options))
    async with await open_store(args) as source, await target.open():
        with ops.ProgressBar("migrate") as bar:
            totals = await ops.migrate(source, target, progress=bar)
    output.emit(out, [{"target": args.to_type, **totals}], args.json)
    return 0


@command("prune")
async def _prune(args: argparse.Namespace, out: TextIO) -> int:
    older_than = None if args.older_than is None else parse_age(args.older_than)
    if older_than is None and args.keep_latest is None:
        raise ValueError("give --older-than, --keep-latest or both")
    async with await open_store(args) as store:
        with ops.ProgressBar("prune") as bar:
            ids = await ops.prune(
                store,
                older_than=older_than,
                keep_latest=args.keep_latest,
                template_id=args.template,
                dry_run=args.dry_run,
                batch_size=args.batch_size,
                progress=bar,
            )
    action = "would delete" if args.dry_run else "deleted"
    output.emit(out, [{"agentId": agent_id, "action": action} for agent_id in ids], args.json)
    return 0


@command("import-kode-json")
async def _import_kode_json(args: argparse.Namespace, out: TextIO) -> int:
    if not Path(args.src).is_dir():
        raise KodeStoreError(f"{args.src} is not a directory")
    async with await open_store(args) as store:
        with ops.ProgressBar("import") as bar:
            report = await ops.import_kode_json(args.src, store, progress=bar)
    summary = report.to_dict()
    skipped = summary.pop("skipped")
    output.emit(out, [{**summary, "skippedAgents": len(skipped)}], args.json)
    if skipped and not args.json:
        out.write("\nskipped:\n")
    if skipped:
        output.emit(out, skipped, args.json)
    return 1 if skipped else 0


def add_ops_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the operations subcommands to ``kodestore``'s subparsers."""
    backup = sub.add_parser(
        "backup",
        parents=[common],
        help="write a verifiable backup while writers keep running",
        description="Back up every agent (database rows and files) to a new directory of JSON lines"
        " with a manifest of sizes and sha256. Restores into any backend.",
    )
    backup.add_argument("dest", help="backup directory to create (must not exist, or be empty)")

    restore = sub.add_parser(
        "restore",
        parents=[common],
        help="verify a backup and restore it into the store",
        description="Verify the backup's manifest, sizes and sha256, then restore it into the store"
        " the store flags describe. Refuses a store that holds agents unless --overwrite.",
    )
    restore.add_argument("src", help="backup directory (written by 'kodestore backup')")
    restore.add_argument("--overwrite", action="store_true", help="delete the target's agents first")
    restore.add_argument("--verify-only", action="store_true", help="only verify the backup")

    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy every agent to another store",
        description="Copy every agent of the source store (store flags or KODE_* variables) to the"
        " target given by --to-* flags, e.g. sqlite to postgres or json to sqlite. Idempotent: run it"
        " again to resume; verifies counts at the end.",
    )
    to = migrate.add_argument_group("target store")
    to.add_argument("--to-type", required=True, choices=STORE_TYPES, help="target store type")
    to.add_argument("--to-db", help="target SQLite database path")
    to.add_argument("--to-store-dir", help="target directory of the JSONL files")
    to.add_argument("--to-dsn", help="target PostgreSQL DSN")
    to.add_argument("--to-schema", help="target PostgreSQL schema (default public)")

    prune = sub.add_parser(
        "prune",
        parents=[common],
        help="delete old agents (retention)",
        description="Delete agents last updated before --older-than, keeping the --keep-latest newest"
        " per template; database rows, logs and media cache go together. Safe from several workers.",
    )
    prune.add_argument("--older-than", metavar="AGE", help="e.g. 30d, 12h, 90m, 2w, or an ISO date")
    prune.add_argument("--keep-latest", type=int_at_least(0), metavar="N", help="keep N newest per template")
    prune.add_argument("--template", help="only agents of this template")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    prune.add_argument(
        "--batch-size", type=int_at_least(1), default=100, help="agents per batch (default 100)"
    )

    kode = sub.add_parser(
        "import-kode-json",
        parents=[common],
        help="import a TypeScript SDK JSONStore directory",
        description="Import every agent of a directory written by the TypeScript KODE SDK's JSONStore,"
        " recovering its pending WAL files. Exit status 1 when some agents had to be skipped.",
    )
    kode.add_argument("src", help="the JSONStore base directory")
