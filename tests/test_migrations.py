"""Migration files split into the statements they hold, a function body with its ``;`` kept whole."""

from __future__ import annotations

import pytest

from kodestore.db.migrations import load_migrations, split_statements
from kodestore.errors import ConfigError


def test_statements_end_at_a_semicolon_ending_a_line() -> None:
    script = "-- a comment;\nCREATE TABLE a (x INT);\nCREATE INDEX a_x\n    ON a (x);\n"
    assert split_statements(script) == ("CREATE TABLE a (x INT)", "CREATE INDEX a_x\n    ON a (x)")


def test_a_dollar_quoted_body_is_one_statement() -> None:
    script = (
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "    RETURN 1;\n"
        "END\n"
        "$$;\n"
        "SELECT f();\n"
    )
    function, call = split_statements(script)
    assert function.startswith("CREATE FUNCTION") and "RETURN 1;" in function and function.endswith("$$")
    assert call == "SELECT f()"


def test_a_statement_without_its_semicolon_is_refused() -> None:
    with pytest.raises(ConfigError, match="no ';'"):
        split_statements("CREATE TABLE a (x INT);\nCREATE TABLE b (y INT)\n")


def test_the_guard_function_ships_as_one_statement() -> None:
    (guarded_saves,) = [m for m in load_migrations("postgres") if m.name == "guarded_saves"]
    assert len(guarded_saves.statements) == 1
    assert "RAISE EXCEPTION" in guarded_saves.statements[0]
