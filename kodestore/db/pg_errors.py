"""Where psycopg's errors become kodestore's: one function, and no password in any message."""

from __future__ import annotations

import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

from kodestore.config import redact_dsn
from kodestore.errors import KodeStoreError, StorageError


def translate(exc: Exception, dsn: str) -> KodeStoreError:
    """The one place where psycopg's errors become kodestore's; the message never shows a password."""
    message = f"postgres: {type(exc).__name__}: {exc}".rstrip(": ")
    message = redact_dsn(message)
    password = _password(dsn)
    if password:
        message = message.replace(password, "***")
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StorageError(message)  # unreachable, killed, timed out, out of resources
    return KodeStoreError(message)


def _password(dsn: str) -> str | None:
    try:
        password = conninfo_to_dict(dsn).get("password")
        return str(password) if password else None
    except psycopg.Error:
        match = re.search(r"://[^:/@]*:([^@]*)@", dsn)  # unparsable: the URL form's password, if any
        return match.group(1) if match else None
