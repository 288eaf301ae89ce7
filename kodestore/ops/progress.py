"""A one-line progress bar on stderr, drawn only when stderr is a terminal.

Operations take any ``progress(done, total)`` callable; this is the one the command line passes.
Cron jobs and pipes get no bar and no escape codes, so their logs stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30
REDRAW_S = 0.1


class ProgressBar:
    """``label [#########.........]  42/100  12.3/s``, redrawn at most every 0.1 s."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn_at = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._drawn_at < REDRAW_S:
            return
        self._drawn_at = now
        filled = WIDTH if total <= 0 else WIDTH * min(done, total) // total
        rate = done / max(now - self._started, 1e-9)
        bar = "#" * filled + "." * (WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {rate:,.1f}/s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line so the next output starts on a fresh one."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False
