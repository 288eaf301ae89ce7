#!/usr/bin/env bash
# Restore a kodestore backup: a backup directory, or the newest complete backup under a backup root.
#
# Usage: restore.sh BACKUP_DIR|BACKUP_ROOT [--overwrite] [kodestore store flags...]
#
# The target store comes from the KODE_* environment or the flags (--db, --store-dir, --dsn, ...).
# The backup is verified (sizes and sha256) before anything is written; a target that already holds
# agents is refused unless --overwrite is given. $KODESTORE names the command (default: kodestore).
# Exit status: 0 restored, 2 bad usage, no backup found, or a failed verification or restore.
#
#   scripts/restore.sh /srv/backups/kode --db /srv/kode/agents.db --store-dir /srv/kode/store
set -euo pipefail

log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) restore.sh: $*" >&2; }

if [[ $# -ge 1 && ($1 == -h || $1 == --help) ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ $# -lt 1 ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
src=$1
shift
read -r -a kodestore <<<"${KODESTORE:-kodestore}"

if [[ ! -f $src/manifest.json ]]; then
  latest=""
  if [[ -d $src ]]; then
    latest=$(
      find "$src" -mindepth 1 -maxdepth 1 -type d -name 'kodestore-*' -exec test -f '{}/manifest.json' ';' -print |
        sort | tail -n 1
    )
  fi
  if [[ -z $latest ]]; then
    log "no backup found at $src"
    exit 2
  fi
  src=$latest
fi
log "restoring $src"
if ! "${kodestore[@]}" restore "$src" "$@"; then
  exit 2
fi
