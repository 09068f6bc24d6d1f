"""The MySQL writer for a mapped model: the one place that writes "this key is now this row"
and "this key is gone", each guarded by the key's state (`KeyState`) locked.

Owns the mapped table's row upsert and delete, and the guard: which change of a key may
land. One guard, three ways to order a change against what the key state recorded:

- `Guard.SEQUENCE` (the worker's apply, failed-change replay): the change wins when its
  stream sequence number is higher than the one applied (sequence numbers compared as
  integers; an equal one is stale). A removal leaves a tombstone with its sequence number.
  The guarded key-state upsert takes the locks itself; a batch of any size goes in two
  round trips (see `_sequence_write`).
- `Guard.VERSION` (backfill to MySQL): the change wins when its item version is newer than
  the version recorded, and never over a tombstone: a newer stream change already wrote the
  key. An unversioned change wins only for a key the sync has never seen.
- `Guard.CURRENT` (key resync, reconcile's repair to MySQL): the caller read DynamoDB's
  current item while holding the key's lock (`keystate.key_state_lock`), so it wins.

Writers under VERSION and CURRENT lock the key states first (keys sorted), then write the
rows and the states in one round trip; they move the recorded item version and the
tombstone, never the sequence number (only the stream orders by it).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, models, transaction
from django.utils import timezone

from syncer.models import KeyState
from syncer.registry import Mapping
from syncer.store import keystate
from syncer.store.marks import sync_writes_mark
from syncer.store.sql import SqlValues, insert_head, round_trip
from syncer.store.sql import quote as _q


class Guard(enum.StrEnum):
    SEQUENCE = "sequence"
    VERSION = "version"
    CURRENT = "current"


class KeyChange(Protocol):
    """What the writer needs of a change (the apply's ParsedChange is one)."""

    key: str
    seq: int  # stream sequence number (SEQUENCE guard only)
    row: dict[str, Any] | None  # model field values; None: the key is gone
    version: int | None  # DynamoDB item version
    db_source_time: str | None  # when it happened in DynamoDB, as the database takes it


@dataclass(slots=True)
class RowChange:
    """A change that did not come from the stream (backfill, resync)."""

    key: str
    row: dict[str, Any] | None
    version: int | None
    seq: int = 0
    db_source_time: str | None = None


@dataclass
class Written:
    winners: list[Any]  # the changes that landed, in key order
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why (VERSION guard)


# Why a change lost under the VERSION guard.
TOMBSTONE = "tombstone"  # removed since: a newer stream change wrote the key
OLDER = "older"  # the key state holds this version or a newer one
UNORDERED = "unordered"  # no version, for a key the sync has already seen


def rows_write(
    *,
    mapping: Mapping,
    changes: Sequence[KeyChange],
    guard: Guard = Guard.SEQUENCE,
    now: datetime | None = None,
    log: Callable[[list[Any]], list[str]] | None = None,
) -> Written:
    """Write the changes of one mapping that the guard lets through, in one transaction.

    `log(winners)` returns more statements to send with the row writes, in the same round
    trip and transaction (the apply's change log). Raises DatabaseError as the database
    does; nothing is written then."""
    now = now or timezone.now()
    if guard is Guard.SEQUENCE:
        return Written(_sequence_write(mapping, changes, now, log))
    return _locked_write(mapping, changes, guard, now, log)


# --- the shared statements -----------------------------------------------------------


@functools.cache
def _upsert_parts(mapping: Mapping) -> tuple[str, str, tuple[Any, ...]]:
    """The mapped table's multi-row upsert (head, tail) and the per-column converters to
    database values (None where the value goes as it is)."""
    model = mapping.get_model()
    key_field = model._meta.get_field(mapping.key_field)
    fields = [model._meta.get_field(fm.field) for fm in mapping.fields]
    head = insert_head(model._meta.db_table, [key_field.column, *(f.column for f in fields)])
    updates = ", ".join(f"{_q(f.column)} = VALUES({_q(f.column)})" for f in fields)
    # ON DUPLICATE KEY UPDATE matches the key column's unique index.
    preps = tuple(
        None
        if type(f) in (models.CharField, models.TextField)  # a str or None goes as it is
        else functools.partial(_prep_save, f)
        for f in fields
    )
    return head, f" ON DUPLICATE KEY UPDATE {updates}", preps


def _prep_save(field: models.Field, value: Any) -> Any:
    return field.get_db_prep_save(value, connection)


def _row_statements(
    mapping: Mapping, winners: list[Any], key_lits: dict[str, bytes] | None = None, db=None
) -> list[str]:
    """The winners' rows upserted and the removed keys' rows deleted (`key_lits`: the
    keys' literals, when the caller has them)."""
    upserts = [w for w in winners if w.row is not None]
    removes = [w.key for w in winners if w.row is None]
    writes: list[str] = []
    values = SqlValues(db)
    if upserts:
        head, tail, preps = _upsert_parts(mapping)
        attrs = [fm.field for fm in mapping.fields]
        if not any(preps):  # text columns only: the values go as they are (hot path)
            lit, add = values.lit, values.add_literals
            if key_lits is None:
                key_lits = {w.key: values.string(w.key) for w in upserts}
            for w in upserts:
                add(b"(" + b",".join((key_lits[w.key], *map(lit, map(w.row.get, attrs)))) + b")")
        else:
            for w in upserts:
                row = w.row
                values.add(
                    (
                        w.key,
                        *(
                            row.get(a) if prep is None else prep(row.get(a))
                            for a, prep in zip(attrs, preps, strict=True)
                        ),
                    )
                )
        writes.append(values.sql(head, tail))
    if removes:
        model = mapping.get_model()
        writes.append(
            f"DELETE FROM {_q(model._meta.db_table)} WHERE "
            f"{_q(model._meta.get_field(mapping.key_field).column)} IN ({values.text(removes)})"
        )
    return writes


def db_time(value: datetime | None) -> str | None:
    # What DatabaseOperations.adapt_datetimefield_value does on MySQL with USE_TZ (naive
    # UTC, the connection's time zone, as text) without its per-value checks.
    return str(value.astimezone(UTC).replace(tzinfo=None)) if value is not None else None


# --- the stream's guard: sequence numbers, two round trips -----------------------------

# The batch's constants (mapping, applied_at) lead, so they are escaped once per batch.
STATE_COLUMNS = (
    "mapping",
    "applied_at",
    "key",
    "sequence",
    "previous_sequence",
    "deleted",
    "item_version",
    "source_time",
)


@functools.cache
def _guard_tail() -> str:
    """The key-state upsert's tail: it records a batch's newest changes and locks their keys.

    Per key, under the row lock the statement itself takes (keys in sorted order, so
    concurrent batches cannot deadlock): `previous_sequence` keeps the sequence found (NULL
    for a new key), the other columns move only when the change is newer, and `sequence` is
    assigned last so every IF still sees the old value (also under MariaDB's
    SIMULTANEOUS_ASSIGNMENT). Portable: MySQL 8.0 takes VALUES() here (deprecated, with a
    warning) and MariaDB has no row alias."""
    newer = f"VALUES({_q('sequence')}) > {_q('sequence')}"
    moved = ", ".join(
        f"{_q(c)} = IF({newer}, VALUES({_q(c)}), {_q(c)})"
        for c in ("deleted", "item_version", "source_time", "applied_at")
    )
    return (
        f" ON DUPLICATE KEY UPDATE {_q('previous_sequence')} = {_q('sequence')}, {moved}, "
        + f"{_q('sequence')} = GREATEST({_q('sequence')}, VALUES({_q('sequence')}))"
    )


@functools.cache
def _guard_read_head() -> str:
    """Reads back what the upsert found, by the unique key (MariaDB once kept a full-scan plan
    for `key IN (...)` on a table that grew from empty within a run). The rows are already
    locked by the upsert in this transaction; FOR UPDATE makes it read their latest version
    whatever the isolation level."""
    state = KeyState._meta
    return (
        f"SELECT {_q('key')}, {_q('previous_sequence')} FROM {_q(state.db_table)} "
        f"FORCE INDEX ({_q('syncer_keystate_unique_key')}) WHERE {_q('mapping')} = "
    )


def _sequence_write(mapping: Mapping, changes: Sequence[KeyChange], now: datetime, log):
    """One batch of one mapping in one transaction, in two round trips whatever its size.

    1. the guarded key-state upsert (locks the keys, records the newest changes) and the
       locking read of what it found, which tells the winners;
    2. the winners' rows upserted, the removed ones deleted, and `log`'s statements.
    Outside any transaction (the worker), START TRANSACTION and COMMIT ride along with
    them; inside one (a caller's atomic block, tests) a savepoint takes their place."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each use of the `connection` proxy looks it up
    sync_writes_mark(conn=db)  # the capture triggers skip the sync's own writes (no echo)
    if db.get_autocommit() and not db.in_atomic_block:
        with db.cursor() as cur:
            try:
                return _sequence_statements(
                    cur, db, mapping, changes, now, log, begin=["START TRANSACTION"], end=["COMMIT"]
                )
            except BaseException:
                _rollback_quietly(cur)
                raise
    with transaction.atomic(), db.cursor() as cur:
        return _sequence_statements(cur, db, mapping, changes, now, log, begin=[], end=[])


def _rollback_quietly(cur) -> None:
    # The transaction this module opened must not stay open on a connection Django believes
    # is in autocommit mode; if the connection is gone, the server has rolled it back.
    try:
        cur.execute("ROLLBACK")
    except DatabaseError:
        connection.close_if_unusable_or_obsolete()


def _sequence_statements(cur, db, mapping, changes, now, log, *, begin: list[str], end: list[str]):
    # The newest change per key within the batch; the others are stale by construction.
    newest: dict[str, Any] = {}
    for change in changes:
        best = newest.get(change.key)
        if best is None or change.seq > best.seq:
            newest[change.key] = change
    keys = sorted(newest)

    name = mapping.name
    values = SqlValues(db)
    string = values.string
    # Each key's literal serves three statements (state, read-back, row); source times
    # repeat within a batch. The state row is formatted whole: the same literals as add()
    # gives (int as %d, None as NULL, a bool as 0/1), at a fraction of the cost per change.
    key_lits = {k: string(k) for k in keys}
    time_lits: dict[str | None, bytes] = {None: b"NULL"}
    lead = values.lead(name, db_time(now)).replace(b"%", b"%%")  # a template below
    row = b"(" + lead + b"%s,%d,NULL,%s,%s,%s)"
    add = values.add_literals
    for k in keys:
        w = newest[k]
        t = w.db_source_time
        t_lit = time_lits.get(t)
        if t_lit is None:
            t_lit = time_lits[t] = string(t)
        version = w.version
        add(
            row
            % (
                key_lits[k],
                w.seq,
                b"1" if w.row is None else b"0",
                b"NULL" if version is None else b"%d" % version,
                t_lit,
            )
        )
    upsert = values.sql(insert_head(KeyState._meta.db_table, STATE_COLUMNS), _guard_tail())
    read = (
        f"{_guard_read_head()}{values.text([name])} AND {_q('key')} IN ("
        f"{b','.join(key_lits.values()).decode(values.encoding)}) FOR UPDATE"
    )
    found = dict(round_trip(cur, [*begin, upsert, read], db))
    if len(found) != len(keys):
        raise DatabaseError(f"key state read returned {len(found)} of {len(keys)} keys")
    winners = [newest[k] for k in keys if found[k] is None or newest[k].seq > int(found[k])]
    writes = _row_statements(mapping, winners, key_lits, db)
    if log is not None:
        writes += log(winners)
    if writes or end:
        round_trip(cur, [*writes, *end], db)
    return winners


# --- the guards under a locked key state: item versions, or DynamoDB's current item -----

_LOCKED_STATE_COLUMNS = ("mapping", "applied_at", "key", "sequence", "deleted", "item_version")


@functools.cache
def _locked_state_tail() -> str:
    # Every state exists and is locked by now; the sequence stays what the stream applied.
    return " ON DUPLICATE KEY UPDATE " + ", ".join(
        f"{_q(c)} = VALUES({_q(c)})" for c in ("deleted", "item_version", "applied_at")
    )


def _locked_write(mapping, changes, guard: Guard, now: datetime, log) -> Written:
    by_key = {c.key: c for c in changes}  # one change per key: the caller's newest
    keys = sorted(by_key)
    skipped: dict[str, str] = {}
    with transaction.atomic():
        sync_writes_mark()  # DynamoDB's state written back: not a legacy write to capture
        known = keystate.key_states_known(mapping=mapping, keys=keys) if keys else set()
        states = keystate.key_states_lock(mapping=mapping, keys=keys)
        winners = []
        for key in keys:
            change, state = by_key[key], states[key]
            if guard is Guard.VERSION:
                why = _version_guard(change, state, known=key in known)
                if why:
                    skipped[key] = why
                    continue
            winners.append(change)
        writes = _row_statements(mapping, winners)
        if winners:
            values = SqlValues()
            lead = values.lead(mapping.name, db_time(now))
            for w in winners:
                values.add((w.key, 0, w.row is None, None if w.row is None else w.version), lead)
            head = insert_head(KeyState._meta.db_table, _LOCKED_STATE_COLUMNS)
            writes.append(values.sql(head, _locked_state_tail()))
        if log is not None:
            writes += log(winners)
        if writes:
            with connection.cursor() as cur:
                round_trip(cur, writes)
    return Written(winners, skipped)


def _version_guard(change: KeyChange, state: KeyState, *, known: bool) -> str:
    """Why `change` must not land over what the key state recorded ("" when it may)."""
    if state.deleted:
        return TOMBSTONE
    if change.version is None and known:
        return UNORDERED
    if state.item_version is not None and (change.version or 0) <= state.item_version:
        return OLDER
    return ""
