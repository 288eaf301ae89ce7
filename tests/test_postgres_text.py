"""The Postgres backend's pure parts: the NUL-safe text codec, placeholder rendering, error translation.

Property tests run the codec alone, then through the real server: text and jsonb round trips, the
dialect's JSON fragments on NUL-holding strings, and code-point order under ``COLLATE "C"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from helpers.pg_env import require_postgres
from helpers.pg_strategies import json_values, tricky_text
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg_pool import PoolTimeout

from kodestore.db.pg_dialect import PostgresDialect, advisory_key
from kodestore.db.pg_driver import render
from kodestore.db.pg_errors import translate
from kodestore.db.pg_text import (
    decode_text,
    encode_text,
    install_text_codec,
    sql_plain_as_json_string,
)
from kodestore.errors import KodeStoreError, StorageError

_UNESCAPED_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
SERVER = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ---- the codec alone -----------------------------------------------------------------------------


@given(tricky_text)
def test_any_text_round_trips(text: str) -> None:
    encoded = encode_text(text)
    assert decode_text(encoded) == text
    assert "\x00" not in encoded and not _UNESCAPED_JSON_NUL.search(encoded)


@given(json_values)
def test_json_text_stays_valid_json_and_round_trips(value: Any) -> None:
    encoded = encode_text(orjson.dumps(value).decode())
    assert "\x00" not in encoded and not _UNESCAPED_JSON_NUL.search(encoded)
    orjson.loads(encoded)  # still JSON: what jsonb will parse
    assert orjson.loads(decode_text(encoded)) == value


def test_ordinary_text_is_not_copied() -> None:
    text = "plain text with a \\n backslash and é"
    assert encode_text(text) is text and decode_text(text) is text


@given(tricky_text, tricky_text)
def test_encoding_keeps_code_point_order(a: str, b: str) -> None:
    assert (a < b) == (encode_text(a) < encode_text(b))
    assert encode_text(a).startswith(encode_text(b)) == a.startswith(b)  # prefix ranges stay exact


def test_the_codes() -> None:
    assert encode_text("a\x00b\x01") == "a\x01\x01b\x01\x02"
    assert encode_text('"\\u0000\\u0001"') == '"\\u0001\\u0001\\u0001\\u0002"'
    assert encode_text('"\\\\u0000"') == '"\\\\u0000"'  # an escaped backslash, then plain "u0000"
    assert decode_text("\x01x \\u0001x") == "\x01x \\u0001x"  # not one of ours: left alone


# ---- through the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(require_postgres(), autocommit=True) as connection:
        install_text_codec(connection.adapters)
        yield connection


@pytest.mark.postgres
@SERVER
@given(text=tricky_text)
def test_text_round_trips_through_the_server(conn: psycopg.Connection[Any], text: str) -> None:
    assert conn.execute("SELECT %s::text", (text,)).fetchone() == (text,)


@pytest.mark.postgres
@SERVER
@given(value=json_values)
def test_json_round_trips_through_jsonb(conn: psycopg.Connection[Any], value: Any) -> None:
    row = conn.execute("SELECT %s::jsonb, %s::json", (orjson.dumps(value).decode(),) * 2).fetchone()
    assert row is not None
    assert orjson.loads(row[0]) == value and orjson.loads(row[1]) == value


@pytest.mark.postgres
@SERVER
@given(texts=st.lists(tricky_text, min_size=2, max_size=8))
def test_server_orders_encoded_text_by_code_point(conn: psycopg.Connection[Any], texts: list[str]) -> None:
    query = 'SELECT t FROM unnest(%s::text[]) AS t ORDER BY t COLLATE "C"'
    assert [t for (t,) in conn.execute(query, (texts,)).fetchall()] == sorted(texts)


@pytest.mark.postgres
@SERVER
@given(text=tricky_text)
def test_sql_conversions_agree_with_the_codec(conn: psycopg.Connection[Any], text: str) -> None:
    as_json = orjson.dumps([text]).decode()
    query = f"SELECT jsonb_build_array({sql_plain_as_json_string('%s::text')}) = %s::jsonb"
    assert conn.execute(query, (text, as_json)).fetchone() == (True,)


@pytest.mark.postgres
@SERVER
@given(key=tricky_text, value=tricky_text)
def test_dialect_json_fragments_match_nul_text(conn: psycopg.Connection[Any], key: str, value: str) -> None:
    assume(key != "k")
    dialect = PostgresDialect("public")
    content = orjson.dumps([{"type": value}, {"type": 1}]).decode()
    meta = orjson.dumps({key: [value], "k": value}).decode()
    query = render(
        f"SELECT {dialect.content_has_type('c')},"
        f" {dialect.json_contains('m')}, {dialect.json_key_is('m', 'k')}"
        " FROM (SELECT ?::jsonb AS c, ?::jsonb AS m) AS t"
    )
    wanted = orjson.dumps({key: [value]}).decode()
    one_key = orjson.dumps({"k": value}).decode()
    params = (value, wanted, one_key, content, meta)
    assert conn.execute(query, params).fetchone() == (True, True, True)


@pytest.mark.postgres
def test_stats_aggregate_keeps_nul_keys(conn: psycopg.Connection[Any]) -> None:
    agg = PostgresDialect("public").json_object_agg("k", "n")
    names = ["a\x00b", "a\\u0000b", "\x01", "a\\u0001b", "plain"]
    row = conn.execute(
        f"SELECT {agg} FROM (SELECT unnest(%s::text[]) AS k, 1 AS n) AS t", (names,)
    ).fetchone()
    assert row is not None and orjson.loads(row[0]) == dict.fromkeys(names, 1)


# ---- rendering, keys, errors ---------------------------------------------------------------------


def test_render_placeholders_but_not_inside_literals() -> None:
    assert render("SELECT ?, '?', \"a?\", 'it''s ?%', 5 % 2 WHERE x = ?") == (
        "SELECT %s, '?', \"a?\", 'it''s ?%%', 5 %% 2 WHERE x = %s"
    )


def test_advisory_keys_are_signed_64_bit_and_schema_scoped() -> None:
    keys = {advisory_key(schema, agent) for schema in ("a", "b") for agent in ("x", "y")}
    assert len(keys) == 4 and all(-(2**63) <= key < 2**63 for key in keys)
    assert advisory_key("a", "x") == advisory_key("a", "x")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (psycopg.OperationalError("connection failed: password=s3cret"), StorageError),
        (psycopg.InterfaceError("the connection is closed"), StorageError),
        (PoolTimeout("couldn't get a connection after 1.00 sec"), StorageError),
        (psycopg.errors.UniqueViolation("duplicate key s3cret"), KodeStoreError),
        (psycopg.errors.InvalidTextRepresentation("bad json"), KodeStoreError),
    ],
)
@pytest.mark.parametrize("dsn", ["postgresql://u:s3cret@h/db", "host=h user=u password='s3cret'"])
def test_errors_translate_without_the_password(error: Exception, kind: type, dsn: str) -> None:
    translated = translate(error, dsn)
    assert type(translated) is kind
    assert "s3cret" not in str(translated) and str(translated).startswith("postgres: ")
