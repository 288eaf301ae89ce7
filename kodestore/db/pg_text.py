"""NUL-safe text for Postgres: a reversible escape on every string sent to and read from the server.

Postgres ``text`` cannot hold U+0000 and ``jsonb`` rejects the ``\\u0000`` escape, yet the contract says
every string round-trips exactly. The driver therefore encodes each ``str`` parameter and decodes each
text or JSON result, so the shared SQL code never sees the escape. It is byte stuffing with U+0001:

* in plain text: U+0001 -> U+0001 U+0002, then NUL -> U+0001 U+0001;
* in JSON text, where those characters are written ``\\u0001`` and ``\\u0000`` (an escape is one when
  its backslash is not itself escaped): ``\\u0001`` -> ``\\u0001\\u0002``, ``\\u0000`` -> ``\\u0001\\u0001``.

U+0001 sorts just above NUL, so the encoding keeps code-point order: ``ORDER BY`` and prefix ranges on
``COLLATE "C"`` columns order encoded ids as the originals sort. One function serves both kinds of
parameter (the driver cannot tell them apart) and stays injective, so a plain string holding a literal
backslash-``u0000`` round-trips too; the price is that such a string (rare) is stored stuffed in a text
column but not inside jsonb, so the few dialect fragments where a plain value meets a jsonb string
convert with the SQL functions at the bottom. Strings without NUL, U+0001 or ``\\u000`` pass through
untouched.
"""

from __future__ import annotations

import re

from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper, Loader

_STUFF = "\x01"
_JSON_STUFF = "\\u0001"
# ``\u0000`` / ``\u0001`` after an even run of backslashes (escaped backslashes) not preceded by another
_JSON_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u000([01])")
_ENCODED = re.compile(r"\x01([\x01\x02])|(?<!\\)((?:\\\\)*)\\u0001\\u000([12])")
_JSON_ENCODED = {"0": "\\u0001\\u0001", "1": "\\u0001\\u0002"}
_DECODED = {"\x01": "\x00", "\x02": "\x01"}
_JSON_DECODED = {"1": "\\u0000", "2": "\\u0001"}


def _encode_json_escape(match: re.Match[str]) -> str:
    return match.group(1) + _JSON_ENCODED[match.group(2)]


def _decode(match: re.Match[str]) -> str:
    if match.group(1) is not None:
        return _DECODED[match.group(1)]
    return match.group(2) + _JSON_DECODED[match.group(3)]


def encode_text(text: str) -> str:
    """The form stored in Postgres: no NUL character and no JSON NUL escape; same code-point order."""
    if "\x00" in text or _STUFF in text:
        text = text.replace(_STUFF, "\x01\x02").replace("\x00", "\x01\x01")
    if "\\u000" in text:
        text = _JSON_ESCAPE.sub(_encode_json_escape, text)
    return text


def decode_text(text: str) -> str:
    """Inverse of ``encode_text``; JSON read back gets its ``\\u0000`` escapes again."""
    if _STUFF not in text and _JSON_STUFF not in text:
        return text
    return _ENCODED.sub(_decode, text)


class _EncodingStrDumper(Dumper):
    """``str`` parameters, encoded, sent with the unknown type so the server casts them (text, jsonb)."""

    def dump(self, obj: str) -> Buffer:
        return encode_text(obj).encode()


class _DecodingTextLoader(Loader):
    """Text and JSON columns as ``str`` (JSON is parsed by the shared code), decoded."""

    def load(self, data: Buffer) -> str:
        return decode_text(str(data, "utf-8"))


def install_text_codec(adapters: AdaptersMap) -> None:
    """Make a connection or cursor encode ``str`` parameters and decode text and JSON results."""
    adapters.register_dumper(str, _EncodingStrDumper)
    for type_name in ("text", "varchar", "bpchar", "json", "jsonb"):
        adapters.register_loader(type_name, _DecodingTextLoader)


# ---- the JSON-escape stuffing in SQL, for fragments where a plain value meets a jsonb string ---------

# an escape ``\u000<digit>`` whose backslash is not itself escaped (Postgres regex, standard string)
_SQL_ESCAPE = r"(?<!\\)((?:\\\\)*)\\u000"


def sql_plain_as_json_string(expr: str) -> str:
    """SQL turning an encoded plain value into the encoding of the same string inside ``jsonb``."""
    unstuffed = rf"regexp_replace({expr}, '{_SQL_ESCAPE}1\\u0001', '\1\\u0000', 'g')"
    return rf"regexp_replace({unstuffed}, '{_SQL_ESCAPE}1\\u0002', '\1\\u0001', 'g')"
