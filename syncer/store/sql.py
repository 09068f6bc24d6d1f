"""Owns the multi-row statements built on the client with the driver's own escaping, for
the MySQL writer (syncer.store.mysql) and reconcile's spill and snapshot.

Both build INSERTs of thousands of values per statement; going through MySQLdb's generic
parameter binding for each value was most of their Python time."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any

from django.db import connection, transaction
from MySQLdb.cursors import BaseCursor


@functools.cache
def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def insert_head(table: str, columns: list[str] | tuple[str, ...]) -> str:
    return f"INSERT INTO {quote(table)} ({', '.join(quote(c) for c in columns)}) VALUES "


class SqlValues:
    """Builds the VALUES list of a multi-row statement with the driver's own escaping.

    MySQLdb binds parameters on the client anyway (`Connection.literal` per value, then
    `%`-formatting the query); its generic path was half of the apply's Python time and
    most of the reconcile spill's (executemany). The typed fast paths below produce the
    same literals: strings through the connection's `string_literal`
    (mysql_real_escape_string, charset-aware), ints and booleans as numbers, None as NULL;
    bytes as a hex literal X'..' (`literal`'s escaped bytes need not be valid text in the
    connection's encoding, and the statement is text); any other type falls back to
    `literal` itself."""

    def __init__(self, db=None) -> None:
        # `db`: the connection wrapper, when the caller has it (each use of the
        # `connection` proxy looks up the thread's connection).
        db = db or connection
        db.ensure_connection()
        raw = db.connection
        self._literal = raw.literal
        self._string_literal = raw.string_literal
        self.encoding = raw.encoding
        self.rows: list[bytes] = []
        self.size = 0  # bytes of the VALUES list so far

    def lit(self, value: Any) -> bytes:
        kind = type(value)
        if kind is str:
            return self._string_literal(value.encode(self.encoding))
        if value is None:
            return b"NULL"
        if kind is int:
            return b"%d" % value
        if kind is bool:
            return b"1" if value else b"0"
        if kind is bytes:
            return b"X'%s'" % value.hex().encode()
        return self._literal(value)

    def string(self, value: str) -> bytes:
        """A str's literal (the hot paths' most common value)."""
        return self._string_literal(value.encode(self.encoding))

    def text(self, values: Iterable[Any]) -> str:
        """Literals joined by commas, as text (an IN list, a single value)."""
        return b",".join(map(self.lit, values)).decode(self.encoding)

    def lead(self, *values: Any) -> bytes:
        """Literals of the leading values every row shares, to pass to add()."""
        return b"".join(self.lit(v) + b"," for v in values)

    def add(self, values: Iterable[Any], lead: bytes = b"") -> None:
        self.add_literals(b"(" + lead + b",".join(map(self.lit, values)) + b")")

    def add_literals(self, row: bytes) -> None:
        """A row already made of this object's literals, with its parentheses."""
        self.rows.append(row)
        self.size += len(row) + 1

    def sql(self, head: str, tail: str = "") -> str:
        # No parameters are passed with it, so neither Django nor MySQLdb %-formats it.
        enc = self.encoding
        return (head.encode(enc) + b",".join(self.rows) + tail.encode(enc)).decode(enc)

    def clear(self) -> None:
        self.rows, self.size = [], 0


def round_trip(cur, statements: list[str], db=None) -> list[tuple]:
    """Send statements in one round trip (the driver's multi-statement protocol, which both
    engines speak); return the rows of the result set that has rows. An error in any
    statement is raised here, as Django's DatabaseError, and the rest is not run.
    `db`: the connection wrapper, when the caller has it."""
    cur.execute(";\n".join(statements))  # through Django: its execute wrappers see it
    results = _driver_cursor(cur)
    rows: list[tuple] = []
    with (db or connection).wrap_database_errors:  # as Django's wrapper would translate
        while True:
            if results.description is not None:
                rows = list(results.fetchall())
            if not results.nextset():
                return rows


def _driver_cursor(cur):
    # MySQLdb's own cursor under Django's wrappers (the generic one, then the backend's),
    # whose __getattr__ wraps every attribute read anew.
    while not isinstance(cur, BaseCursor) and hasattr(cur, "cursor"):
        cur = cur.cursor
    return cur


@contextlib.contextmanager
def consistent_reads() -> Iterator[None]:
    """The reads inside see one snapshot of the database. The connection's level (READ
    COMMITTED) gives each statement its own: a row read by one query and its key state by
    the next could straddle an apply's commit. REPEATABLE READ for this one transaction
    (SET TRANSACTION before its first statement, on MariaDB and MySQL 8 alike). Inside a
    caller's transaction the reads get what that transaction gives."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield
