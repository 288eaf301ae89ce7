#!/usr/bin/env bash
# Back up a kodestore store into BACKUP_ROOT/kodestore-<UTC time> and keep only the newest KEEP backups.
#
# Usage: backup.sh BACKUP_ROOT [KEEP] [kodestore store flags...]
#
# The store comes from the KODE_* environment (KODE_STORE_TYPE, KODE_SQLITE_PATH, KODE_STORE_PATH,
# KODE_POSTGRES_DSN / DATABASE_URL, ...) or from the flags after KEEP (--db, --store-dir, --dsn, ...).
# KEEP defaults to $KODE_BACKUP_KEEP, else 7. $KODESTORE names the command (default: kodestore).
# Exit status: 0 done, 1 another backup into BACKUP_ROOT is running, 2 bad usage or a failed backup.
#
# Cron, daily at 03:15, keeping two weeks:
#   15 3 * * * KODE_SQLITE_PATH=/srv/kode/agents.db KODE_STORE_PATH=/srv/kode/store \
#     /opt/kodestore/scripts/backup.sh /srv/backups/kode 14 >> /var/log/kode-backup.log 2>&1
set -euo pipefail

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) backup.sh: $*" >&2; }

if [[ $# -ge 1 && ($1 == -h || $1 == --help) ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ $# -lt 1 ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
root=$1
shift
keep=${KODE_BACKUP_KEEP:-7}
if [[ $# -ge 1 && $1 =~ ^[0-9]+$ ]]; then
  keep=$1
  shift
fi
if ! [[ $keep =~ ^[0-9]+$ ]] || ((keep < 1)); then
  log "KEEP must be a whole number >= 1, got '$keep'"
  exit 2
fi
read -r -a kodestore <<<"${KODESTORE:-kodestore}"

mkdir -p "$root"
# One run per root at a time: a slow backup must not overlap the next cron start.
exec 9>"$root/.backup.lock"
if ! flock -n 9; then
  log "another backup into $root is still running"
  exit 1
fi
# Under the lock no backup is in progress here, so partial directories are leftovers of killed runs.
find "$root" -mindepth 1 -maxdepth 1 -type d -name '.kodestore-*.partial-*' -exec rm -rf -- {} +

name="kodestore-$(date -u +%Y%m%dT%H%M%SZ)"
if [[ -e $root/$name ]]; then
  name="$name-$$"
fi
if ! "${kodestore[@]}" backup "$root/$name" "$@"; then
  log "backup into $root/$name failed; older backups kept"
  exit 2
fi
log "wrote $root/$name"

# Rotation: the newest KEEP complete backups stay (names sort by time); nothing else is touched.
mapfile -t backups < <(
  find "$root" -mindepth 1 -maxdepth 1 -type d -name 'kodestore-*' -exec test -f '{}/manifest.json' ';' -print |
    sort
)
for ((i = 0; i < ${#backups[@]} - keep; i++)); do
  rm -rf -- "${backups[i]}"
  log "removed ${backups[i]}"
done
