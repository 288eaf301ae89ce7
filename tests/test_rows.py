"""Rows for a history that mostly grows: unchanged items keep their rows, any change is seen."""

from __future__ import annotations

from kodestore.db.rows import AppendedRows, message_rows
from kodestore.models import Message
from kodestore.testing import sample_message


def built() -> tuple[AppendedRows[object], list[int]]:
    calls: list[int] = []

    def build(items: object, first: int) -> list[object]:
        calls.append(first)
        return list(message_rows(items, first))  # type: ignore[arg-type]

    return AppendedRows(Message, build), calls


def test_appending_builds_only_the_new_items() -> None:
    rows, calls = built()
    history = [sample_message(i) for i in range(4)]
    first, _ = rows.rows("a", history)
    history += [sample_message(4), sample_message(5)]
    second, extends = rows.rows("a", history)
    assert calls == [0, 4] and extends is first
    assert second[:4] == first and [r.seq for r in second] == list(range(6))
    assert second == message_rows(history)


def test_an_edit_in_place_or_a_removal_rebuilds_everything() -> None:
    rows, calls = built()
    history = [sample_message(i) for i in range(3)]
    rows.rows("a", history)
    history[1].content[0]["text"] = "edited in place"  # the same objects, mutated
    assert rows.rows("a", history) == (message_rows(history), None)
    assert rows.rows("a", history[:2]) == (message_rows(history[:2]), None)
    assert calls == [0, 0, 0]


def test_agents_and_forgetting_are_separate() -> None:
    rows, calls = built()
    rows.rows("a", [sample_message(0)])
    rows.rows("b", [sample_message(0), sample_message(1)])
    rows.forget("a")
    rows.rows("a", [sample_message(0), sample_message(1)])
    assert calls == [0, 0, 0]
