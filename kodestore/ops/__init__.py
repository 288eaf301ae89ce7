"""Operations on whole stores: backup, restore, migrate, prune, and import from the TypeScript SDK.

Every operation works through the public ``Store`` API, so it works on every backend and any pair
of them; see ``docs/operations.md`` for the formats and guarantees.
"""

from kodestore.ops.backup import backup
from kodestore.ops.kode_json import ImportReport, import_kode_json
from kodestore.ops.migrate import migrate
from kodestore.ops.progress import ProgressBar
from kodestore.ops.prune import prune
from kodestore.ops.restore import BackupInvalid, restore, restore_into, verify_backup

__all__ = [
    "BackupInvalid",
    "ImportReport",
    "ProgressBar",
    "backup",
    "import_kode_json",
    "migrate",
    "prune",
    "restore",
    "restore_into",
    "verify_backup",
]
