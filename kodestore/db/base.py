"""The narrow interface between the shared SQL logic and a database driver.

Store logic is written once, as *plans*: generators that yield ``Stmt`` (or ``Batch``) objects and
receive each result. A driver runs a whole plan inside one transaction — SQLite on one connection
(in its thread, or inline for light writes), Postgres on a pooled async connection — so the logic
never knows which database it talks to, and a driver holds only what truly differs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from kodestore.db.migrations import SchemaStatus

T = TypeVar("T")

Fetch = Literal["none", "one", "all"]
Row = tuple[Any, ...]


# Stmt and Batch, like the row and diff types of ``rows`` and ``records``, are built several times per
# save: plain slotted dataclasses, never changed once built, as a frozen one takes three times as long
# to build (about 1 us against 0.3 us, a tenth of a save's client work in all).


@dataclass(slots=True)
class Stmt:
    """One SQL statement with ``?`` placeholders; ``many=True`` runs it once per row of ``params``."""

    sql: str
    params: Sequence[Any] = ()
    fetch: Fetch = "none"
    many: bool = False


@dataclass(slots=True)
class Batch:
    """Statements sent together, without waiting for each result: one round trip on a driver that
    pipelines (Postgres). The plan receives the list of their results.

    ``guarded``: the first statement is a guard that returns a row only if what the plan was computed
    against still holds, and the plan ends with this batch, rolling back (raising) when the guard
    returned nothing. A driver may then send the COMMIT with the batch, provided a failed guard
    undoes the statements after it on the server; it hands the plan ``None`` for that guard."""

    stmts: tuple[Stmt, ...]
    guarded: bool = False


Plan = Generator[Stmt | Batch, Any, T]
PlanFactory = Callable[[], Plan[T]]


class Dialect(ABC):
    """SQL fragments that differ between databases. Fragments take and return SQL text only."""

    name: str
    #: appended to a SELECT that must lock the rows it reads until commit
    for_update: str
    #: first statement of a read transaction whose queries must all see one snapshot; "" where every
    #: transaction already does (SQLite reads one WAL snapshot from its first read to COMMIT)
    snapshot_read: str = ""
    #: ``a <is_same> b`` is true when both are equal or both NULL
    is_same: str

    @abstractmethod
    def content_has_type(self, column: str) -> str:
        """True when JSON array ``column`` has an object element whose ``type`` is the JSON string
        equal to the next parameter (a str). Non-object elements and non-string types never match."""

    @abstractmethod
    def json_array_has(self, column: str) -> str:
        """A condition true when JSON array ``column`` contains the next parameter (a string)."""

    @abstractmethod
    def prefix_range(self, column: str) -> str:
        """``column`` between the next two parameters, compared by code point (not by locale)."""

    @abstractmethod
    def table_exists(self, table: str) -> Stmt:
        """A statement whose single row is non-empty when ``table`` exists."""

    @abstractmethod
    def json_object_agg(self, key: str, value: str) -> str:
        """An aggregate building a JSON object (as text) from ``key`` -> ``value`` rows."""

    def migration_lock(self) -> Stmt | None:
        """A statement that serialises concurrent migrations until commit, where one is needed."""
        return None

    def refresh_statistics(self) -> Stmt | None:
        """A statement that refreshes the query planner's statistics of the store's tables, for after
        a bulk load; ``None`` where the planner works without them (SQLite)."""
        return None

    @abstractmethod
    def json_contains(self, column: str) -> str:
        """True when JSON object ``column`` has every top-level key of the next parameter (a JSON object
        text) with an equal value, as jsonb ``=`` compares: numbers by value (1 = 1.0), ``true`` is not
        1, arrays element by element, objects by their keys whatever the order (equal, not contained).
        """

    def json_key_is(self, column: str, key: str) -> str:
        """True when top-level ``key`` (a trusted literal) of JSON object ``column`` equals the value
        of ``key`` in the next parameter, a one-member JSON object text ``{key: value}``.

        The same test as ``json_contains``; a dialect overrides it when a fixed key lets an index
        answer (SQLite indexes expressions, not containment)."""
        return self.json_contains(column)


class SqlDriver(ABC):
    """Runs plans against one database; owns its connections."""

    dialect: Dialect

    @abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect; apply pending migrations unless ``migrate=False`` (read-only inspection)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def schema_status(self) -> SchemaStatus: ...

    @abstractmethod
    async def run(self, plan: PlanFactory[T], *, write: bool, light: bool = False) -> T:
        """Run ``plan()`` in one transaction; commit if it returns, roll back if it raises.

        ``light``: the plan writes a few rows (one turn's save), so a driver may run it on the
        calling thread when that is cheaper than handing it to another."""

    async def fetch(self, stmt: Stmt, *, write: bool = False) -> Any:
        """What one statement fetched, run as a plan of its own (one transaction)."""
        return await self.run(partial(_single, stmt), write=write)

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the database cannot answer a trivial query."""

    @abstractmethod
    async def size_bytes(self) -> int: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the data lives, safe to print (no password)."""


def _single(stmt: Stmt) -> Plan[Any]:
    return (yield stmt)
