"""What MySQL 8.0 (8.0.11 and later, Aurora MySQL 3) rejects and MariaDB 10.11 accepts."""

from __future__ import annotations

import re

# String literals and quoted identifiers are blanked first, so a chef named "RETURNING" or a
# column called `sequence` is not mistaken for the syntax.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.|\"\")*\"|`(?:[^`]|``)*`", re.S)
_COMMENT = re.compile(r"/\*.*?\*/|(?:--\s|#)[^\n]*", re.S)

FORBIDDEN: list[tuple[str, re.Pattern[str]]] = [
    (
        "RETURNING (MariaDB only; MySQL 8.0 has no RETURNING clause)",
        re.compile(r"\bRETURNING\b", re.I),
    ),
    (
        "IF [NOT] EXISTS inside ALTER TABLE (MariaDB only)",
        re.compile(
            r"\bALTER\s+(?:ONLINE\s+|IGNORE\s+)?TABLE\b[^;]*\bIF\s+(?:NOT\s+)?EXISTS\b", re.I
        ),
    ),
    (
        "CREATE/DROP INDEX IF [NOT] EXISTS (MariaDB only)",
        re.compile(
            r"\b(?:CREATE\s+(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX|DROP\s+INDEX)\s+IF\s+",
            re.I,
        ),
    ),
    (
        "CREATE TRIGGER/PROCEDURE/FUNCTION/VIEW/EVENT IF NOT EXISTS (MySQL 8.0.29+ at best)",
        re.compile(
            r"\bCREATE\s+(?:DEFINER\s*=\s*\S+\s+)?"
            r"(?:TRIGGER|PROCEDURE|FUNCTION|VIEW|EVENT)\s+IF\s+NOT\s+EXISTS\b",
            re.I,
        ),
    ),
    (
        "CREATE OR REPLACE (MariaDB only for tables, triggers, ...)",
        re.compile(r"\bCREATE\s+OR\s+REPLACE\b", re.I),
    ),
    (
        "sequences (MariaDB only)",
        re.compile(
            r"\b(?:CREATE|ALTER|DROP)\s+SEQUENCE\b|\bNEXT\s+VALUE\s+FOR\b|\bPREVIOUS\s+VALUE\s+FOR\b"
            r"|\b(?:NEXTVAL|LASTVAL|SETVAL)\s*\(",
            re.I,
        ),
    ),
    (
        "INTERSECT / EXCEPT (MySQL 8.0.31+ only)",
        re.compile(r"\b(?:INTERSECT|EXCEPT)\b", re.I),
    ),
    (
        "OFFSET ... FETCH FIRST/NEXT (MariaDB only)",
        re.compile(r"\bFETCH\s+(?:FIRST|NEXT)\b", re.I),
    ),
    ("SET STATEMENT ... FOR (MariaDB only)", re.compile(r"^\s*SET\s+STATEMENT\b", re.I)),
    (
        "MariaDB-only functions",
        re.compile(
            r"\b(?:JSON_DETAILED|JSON_LOOSE|JSON_COMPACT|JSON_EXISTS|JSON_EQUALS|JSON_NORMALIZE"
            r"|SFORMAT|NATURAL_SORT_KEY|COLUMN_CREATE|COLUMN_GET)\s*\(",
            re.I,
        ),
    ),
]


class MySQL8DialectError(AssertionError):
    """A statement that MySQL 8.0 would refuse. Not a DatabaseError on purpose: nothing in
    the project may catch it as "the database refused this change" and carry on."""


def statement_violations(sql: str) -> list[str]:
    """The reasons MySQL 8.0 would refuse `sql` (empty when it is portable)."""
    text = _COMMENT.sub(" ", _QUOTED.sub("''", sql))
    reasons = [reason for reason, pattern in FORBIDDEN if pattern.search(text)]
    # A collation name may be quoted, so this one is looked for in the statement as sent.
    if "uca1400" in sql.lower():
        reasons.append("uca1400 collations (MariaDB 10.10+ only)")
    return reasons


def statement_check(sql: str) -> None:
    if isinstance(sql, bytes):
        sql = sql.decode("utf-8", "replace")
    reasons = statement_violations(sql)
    if reasons:
        shown = sql if len(sql) <= 2000 else sql[:2000] + " ..."
        raise MySQL8DialectError(
            f"MySQL 8.0 would refuse this statement ({'; '.join(reasons)}):\n{shown}"
        )
