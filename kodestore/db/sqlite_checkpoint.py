"""WAL checkpoints off the commit path.

By default SQLite checkpoints inside the commit that takes the log past 1,000 pages: that one save
then copies megabytes into the database file, so a store's p99 save latency is a checkpoint, and on
average more than half a save's time. Here the writer's connection never checkpoints
(``wal_autocheckpoint = 0``); a thread with its own connection copies the log into the database
while writes go on (``PASSIVE``: it never blocks a writer; the GIL is released while SQLite works).

A checkpoint that runs beside writes rarely finishes the log (commits add to it meanwhile), and SQLite
only starts the log over once a checkpoint has copied all of it, so under a steady write load it would
grow without end. When it has grown past ``MAX_LOG_FRAMES``, the writer copies the few pages added
since the thread's checkpoint itself, right after its next commit (no write can come in between),
and its next transaction starts the log over. Durability is unchanged: commits
are in the log as before, and an interrupted checkpoint is redone from the log on the next open.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

logger = logging.getLogger("kodestore")

COMMITS_PER_CHECKPOINT = 64  # a few hundred pages of a turn's save: SQLite's own pace, about
MAX_LOG_FRAMES = 4_000  # pages (at 4 KiB) before the log is made to start over


class WalCheckpointer:
    """A thread that checkpoints ``path``'s WAL every ``every`` commits the writer reports."""

    def __init__(self, path: str, every: int = COMMITS_PER_CHECKPOINT) -> None:
        self.path = path
        self._every = every
        self._commits = 0
        self._due = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._finish_log = False  # set by the thread: the writer should copy the log's last pages
        self.checkpoints = 0  # the thread's checkpoints, and the writer's: for tests
        self.log_finishes = 0

    def start(self) -> None:
        # the connection is opened here, in the caller, so a failure to open surfaces at once
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._thread = threading.Thread(
            target=self._run, args=(conn,), name="kodestore-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def committed(self, conn: sqlite3.Connection) -> None:
        """Called with the writer's connection after each write transaction it commits (by one
        thread at a time)."""
        if self._finish_log:
            self._finish_log = False
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.log_finishes += 1
        self._commits += 1
        if self._commits >= self._every:
            self._commits = 0
            self._due.set()

    def stop(self) -> None:
        """Finish the checkpoint under way, if any, and end the thread."""
        if self._thread is None:
            return
        self._stopping = True
        self._due.set()
        self._thread.join()
        self._thread = None

    def _run(self, conn: sqlite3.Connection) -> None:
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stopping:
                    return
                try:
                    self._checkpoint(conn)
                except sqlite3.Error as exc:  # the log stays whole; the next round tries again
                    logger.warning("sqlite %s: WAL checkpoint failed: %s", self.path, exc)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        _, log_frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        if log_frames > MAX_LOG_FRAMES:
            self._finish_log = True
