"""``ProgressBar``: drawn on a terminal only, throttled, and closed with a newline."""

from __future__ import annotations

import io

from kodestore.ops import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar("backup", stream) as bar:
        for done in range(1, 11):
            bar(done, 10)
    assert stream.getvalue() == ""


def test_draws_on_a_terminal_and_always_the_last_step() -> None:
    stream = Terminal()
    with ProgressBar("migrate", stream) as bar:
        for done in range(1, 1001):
            bar(done, 1000)
    text = stream.getvalue()
    assert text.startswith("\rmigrate [") and text.endswith("\n")
    assert text.count("\r") < 50  # throttled to a few redraws, not one per agent
    last = text.rsplit("\r", 1)[1]
    assert "[" + "#" * 30 + "] 1000/1000" in last


def test_forced_on_or_off() -> None:
    stream = io.StringIO()
    bar = ProgressBar("prune", stream, enabled=True)
    bar(0, 0)
    bar.close()
    assert stream.getvalue().startswith("\rprune [") and stream.getvalue().endswith("0/0 0.0/s\n")
    closed = io.StringIO()
    closed.close()
    assert ProgressBar("x", closed).enabled is False
