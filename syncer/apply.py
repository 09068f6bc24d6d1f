"""Apply service: stream changes -> the mapped Django model, in bulk, idempotent, ordered.

Guarantees (DESIGN.md invariants 1-3):
- One transaction per batch, bulk statements per mapping (not one query per change).
- Per key, only a change with a higher stream sequence number than the last applied one
  wins (sequence numbers compared as integers). Duplicates and older changes are recorded
  as stale and change nothing, so at-least-once delivery in any order converges.
  An equal sequence number is stale whatever its payload: the first applied wins (a
  stream record redelivered with a changed payload keeps its event id and number).
- REMOVE leaves a tombstone (KeyState.deleted) with its sequence number, so a stale INSERT
  or MODIFY cannot bring the row back; a later re-creation has a higher number and applies.
- A change that cannot be applied is kept as a FailedChange with its payload and error and
  the rest of the batch is applied. A transient database error (connection lost, deadlock,
  lock wait timeout) raises TransientApplyError so the task retries the whole batch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, OperationalError, connection, models, transaction
from django.db.models import F
from django.utils import timezone

from syncer import metrics
from syncer.capture import sync_writes_mark
from syncer.changelog import changelog_insert
from syncer.changes import EVENT_NAMES
from syncer.models import FailedChange, KeyState
from syncer.registry import Mapping, MappingError, registry
from syncer.sql import SqlValues, insert_head, round_trip
from syncer.sql import quote as _q

logger = logging.getLogger(__name__)

# MySQL/MariaDB error codes that mean "try again later", not "this change is bad".
TRANSIENT_MYSQL_ERRORS = {
    1040,  # too many connections
    1205,  # lock wait timeout
    1213,  # deadlock
    # An Aurora writer during a failover, or a connection that landed on a reader.
    1290,  # running with --read-only
    1792,  # cannot execute statement in a READ ONLY transaction
    1836,  # running in read-only mode
    # First deploy: the workers are up before the migrations have run. Retry until the
    # schema is there; the changes are not bad.
    1146,  # table doesn't exist
    2002,  # can't connect (socket)
    2003,  # can't connect (TCP)
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection (system error)
    4031,  # client disconnected by the server (wait_timeout)
}


class TransientApplyError(Exception):
    """The batch could not be applied for a reason that may pass; retry it whole."""


@dataclass(slots=True)
class ParsedChange:
    mapping: Mapping
    key: str
    event: str
    seq: int
    row: dict[str, Any] | None  # model field values; None for REMOVE
    version: int | None
    source_time: datetime | None
    event_id: str
    raw: dict[str, Any]
    db_source_time: str | None = None  # source_time as the database takes it


@dataclass
class ApplyResult:
    applied: int = 0
    stale: int = 0
    failed: int = 0
    failed_ids: list[str] = field(default_factory=list)

    def merge(self, other: ApplyResult) -> None:
        self.applied += other.applied
        self.stale += other.stale
        self.failed += other.failed
        self.failed_ids += other.failed_ids


def mysql_error_code(exc: BaseException) -> int | None:
    for err in (exc, exc.__cause__):
        args = getattr(err, "args", None)
        if args and isinstance(args[0], int):
            return args[0]
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass (retry the batch) rather than mean a bad change.

    By code, whatever the driver's exception class (1146 is a ProgrammingError); an
    OperationalError without a code is a connection-level failure."""
    if not isinstance(exc, DatabaseError):
        return False
    code = mysql_error_code(exc)
    if code is None:
        return isinstance(exc, OperationalError)
    return code in TRANSIENT_MYSQL_ERRORS


# --- parsing --------------------------------------------------------------------------


def _source_time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    return None


@functools.lru_cache(maxsize=4096, typed=True)  # typed: True and 1 are different keys
def _source_times(value: int | float) -> tuple[datetime | None, str | None]:
    # Stream times repeat within a batch (ApproximateCreationDateTime is coarse).
    source_time = _source_time(value)
    return source_time, _db_time(source_time)


def _sequence_like(value: Any) -> bool:
    # ASCII digits only ("²".isdigit() is True) and within the columns' 40 digits.
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 40


def change_parse(
    *, change: dict[str, Any], fetch_image=None, mappings: dict[str, Mapping] | None = None
) -> ParsedChange:
    """Validate one change message against its mapping; raises MappingError.

    `mappings` (table name -> mapping) saves the registry lookup per change in a batch."""
    if not isinstance(change, dict):
        raise MappingError("change is not an object")
    event_id = change.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MappingError("change has no id")
    table = str(change.get("table"))
    mapping = mappings.get(table) if mappings is not None else None
    if mapping is None:
        try:
            mapping = registry.for_table(table)
        except LookupError as exc:
            raise MappingError(str(exc)) from exc
        if mappings is not None:
            mappings[table] = mapping
    event = change.get("event")
    if event not in EVENT_NAMES:
        raise MappingError(f"unknown event name {event!r}")
    seq_text = change.get("seq")
    if not _sequence_like(seq_text):
        raise MappingError(f"bad sequence number {seq_text!r}")
    key = mapping.key_from_keys(change.get("keys") or {})
    image = change.get("image")
    if event != "REMOVE" and change.get("fetch"):
        # The record was too large to carry: the current item is at least as new.
        image = (fetch_image or image_fetch)(mapping=mapping, keys=change["keys"])
        if image is None:
            event = "REMOVE"
    row = mapping.row_from_image(image) if event != "REMOVE" else None
    ts = change.get("ts")
    if type(ts) in (int, float):
        source_time, db_time = _source_times(ts)
    else:
        source_time = _source_time(ts)
        db_time = _db_time(source_time)
    return ParsedChange(
        mapping=mapping,
        key=key,
        event=event,
        seq=int(seq_text),
        row=row,
        version=mapping.version_from_image(image) if event != "REMOVE" else None,
        source_time=source_time,
        event_id=event_id,
        raw=change,
        db_source_time=db_time,
    )


def image_fetch(*, mapping: Mapping, keys: dict[str, Any]) -> dict[str, Any] | None:
    """The current item (DynamoDB JSON) by a consistent read; None when it is gone."""
    from syncer.aws import dynamodb_client

    response = dynamodb_client().get_item(
        TableName=mapping.table_name, Key=keys, ConsistentRead=True
    )
    return response.get("Item")


# --- failed changes -------------------------------------------------------------------


def failed_change_keep(
    *,
    event_id: str,
    source: str,
    mapping: str,
    key: str,
    event_name: str,
    sequence: Any,
    payload: Any,
    error: str,
    attempts: int = 1,
) -> FailedChange:
    """Keep something the pipeline could not pass on (a change the worker could not apply,
    a stream record the relay could not hand on). The same event seen again counts its new
    attempts on the same row and marks it failed again."""
    now = timezone.now()
    failed, created = FailedChange.objects.get_or_create(
        event_id=event_id[:128],
        defaults={
            "source": source,
            "mapping": mapping[:64],
            "key": key[:255],
            "event_name": event_name[:16],
            "sequence": Decimal(sequence) if _sequence_like(sequence) else None,
            "payload": payload,
            "error": error,
            "attempts": attempts,
            "first_failed_at": now,
            "last_failed_at": now,
        },
    )
    if not created:
        FailedChange.objects.filter(pk=failed.pk).update(
            attempts=F("attempts") + attempts,
            error=error,
            last_failed_at=now,
            status=FailedChange.Status.FAILED,
            resolved_at=None,
        )
        failed.refresh_from_db()
    metrics.failed_record(mapping=mapping, event=failed.event_name, source=source)
    return failed


def failed_change_record(
    *,
    change: dict[str, Any],
    error: str,
    source: str = FailedChange.Source.APPLY,
    mapping: str = "",
    key: str = "",
) -> FailedChange:
    """Keep a change that could not be applied; a redelivery of it counts another attempt."""
    event_id = str(change.get("id") or change.get("eventID") or "")[:128]
    event_id = event_id or f"unknown-{timezone.now():%s%f}"
    seq = change.get("seq")
    failed = failed_change_keep(
        event_id=event_id,
        source=source,
        mapping=mapping,
        key=key,
        event_name=str(change.get("event") or change.get("eventName") or ""),
        sequence=seq,
        payload=change,
        error=error,
    )
    logger.warning(
        "change failed",
        extra={"event_id": event_id, "key": key, "sequence": seq, "error": error},
    )
    return failed


# --- applying -------------------------------------------------------------------------


def changes_apply(*, changes: Iterable[dict[str, Any]], fetch_image=None) -> ApplyResult:
    """Apply a batch of change messages. Raises TransientApplyError to ask for a retry."""
    result = ApplyResult()
    parsed: list[ParsedChange] = []
    invalid: list[tuple[dict[str, Any], str]] = []
    mappings: dict[str, Mapping] = {}
    for change in changes:
        try:
            parsed.append(change_parse(change=change, fetch_image=fetch_image, mappings=mappings))
        except MappingError as exc:
            invalid.append((change, str(exc)))

    try:
        by_mapping: dict[str, list[ParsedChange]] = {}
        for p in parsed:
            by_mapping.setdefault(p.mapping.name, []).append(p)
        for items in by_mapping.values():
            result.merge(_apply_isolating(items))
        for change, error in invalid:
            with transaction.atomic():
                failed_change_record(change=change, error=error, **_where(change))
            result.failed += 1
            result.failed_ids.append(str(change.get("id")) if isinstance(change, dict) else "")
    except DatabaseError as exc:
        if is_transient(exc):
            raise TransientApplyError(str(exc)) from exc
        raise
    return result


def _where(change: Any) -> dict[str, str]:
    """Best-effort mapping name and key of a change that failed to parse."""
    if not isinstance(change, dict):
        return {}
    try:
        mapping = registry.for_table(str(change.get("table")))
    except LookupError:
        return {}
    try:
        key = mapping.key_from_keys(change.get("keys") or {})
    except MappingError:
        key = ""
    return {"mapping": mapping.name, "key": key}


def _apply_isolating(items: list[ParsedChange]) -> ApplyResult:
    """Apply in one transaction; if the database refuses the batch for a non-transient
    reason, bisect until the refused changes are isolated and kept as failed."""
    try:
        return _apply_bulk(items)
    except DatabaseError as exc:
        if is_transient(exc):
            raise
        if len(items) == 1:
            item = items[0]
            with transaction.atomic():
                failed_change_record(
                    change=item.raw,
                    error=f"database refused: {exc}",
                    mapping=item.mapping.name,
                    key=item.key,
                )
            return ApplyResult(failed=1, failed_ids=[item.event_id])
        middle = len(items) // 2
        result = _apply_isolating(items[:middle])
        result.merge(_apply_isolating(items[middle:]))
        return result


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


def _db_time(value: datetime | None) -> str | None:
    # What DatabaseOperations.adapt_datetimefield_value does on MySQL with USE_TZ (naive
    # UTC, the connection's time zone, as text) without its per-value checks.
    return str(value.astimezone(UTC).replace(tzinfo=None)) if value is not None else None


def _apply_bulk(items: list[ParsedChange]) -> ApplyResult:
    """One batch of one mapping in one transaction, in two round trips whatever its size.

    1. the guarded key-state upsert (locks the keys, records the newest changes) and the
       locking read of what it found, which tells the winners;
    2. the winners' rows upserted, the removed ones deleted, and the change log.
    Outside any transaction (the worker), START TRANSACTION and COMMIT ride along with
    them; inside one (a caller's atomic block, tests) a savepoint takes their place."""
    sync_writes_mark()  # the capture triggers skip the sync's own writes (no echo)
    if connection.get_autocommit() and not connection.in_atomic_block:
        with connection.cursor() as cur:
            try:
                return _apply_statements(cur, items, begin=["START TRANSACTION"], end=["COMMIT"])
            except BaseException:
                _rollback_quietly(cur)
                raise
    with transaction.atomic(), connection.cursor() as cur:
        return _apply_statements(cur, items, begin=[], end=[])


def _rollback_quietly(cur) -> None:
    # The transaction this module opened must not stay open on a connection Django believes
    # is in autocommit mode; if the connection is gone, the server has rolled it back.
    try:
        cur.execute("ROLLBACK")
    except DatabaseError:
        connection.close_if_unusable_or_obsolete()


def _apply_statements(cur, items: list[ParsedChange], *, begin: list[str], end: list[str]):
    mapping = items[0].mapping
    model = mapping.get_model()
    now = timezone.now()
    db_now = _db_time(now)

    # The newest change per key within the batch; the others are stale by construction.
    newest: dict[str, ParsedChange] = {}
    for item in items:
        best = newest.get(item.key)
        if best is None or item.seq > best.seq:
            newest[item.key] = item
    keys = sorted(newest)

    name = mapping.name
    values = SqlValues()
    lead = values.lead(name, db_now)
    for k in keys:
        w = newest[k]
        values.add((k, w.seq, None, w.event == "REMOVE", w.version, w.db_source_time), lead)
    upsert = values.sql(insert_head(KeyState._meta.db_table, STATE_COLUMNS), _guard_tail())
    read = (
        f"{_guard_read_head()}{values.text([name])} AND {_q('key')} IN ({values.text(keys)})"
        " FOR UPDATE"
    )
    found = dict(round_trip(cur, [*begin, upsert, read]))
    if len(found) != len(keys):
        raise DatabaseError(f"key state read returned {len(found)} of {len(keys)} keys")
    winners = [newest[k] for k in keys if found[k] is None or newest[k].seq > int(found[k])]
    upserts = [w for w in winners if w.event != "REMOVE"]
    removes = [w.key for w in winners if w.event == "REMOVE"]

    writes: list[str] = []
    if upserts:
        head, tail, preps = _upsert_parts(mapping)
        attrs = [fm.field for fm in mapping.fields]
        values = SqlValues()
        for w in upserts:
            row = w.row or {}
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
        writes.append(
            f"DELETE FROM {_q(model._meta.db_table)} WHERE "
            f"{_q(model._meta.get_field(mapping.key_field).column)} IN ({values.text(removes)})"
        )

    winner_ids = {id(w) for w in winners}
    log_insert, log = changelog_insert(
        mapping=name, applied_at=now, db_applied_at=db_now, items=items, winners=winner_ids
    )
    writes.append(log_insert)
    round_trip(cur, [*writes, *end])

    metrics.applied_record(mapping=mapping.name, items=log)
    if logger.isEnabledFor(logging.DEBUG):
        for item in winners:
            logger.debug(
                "applied %s",
                item.event,
                extra={"key": item.key, "sequence": str(item.seq), "event_id": item.event_id},
            )
    return ApplyResult(applied=len(winners), stale=len(items) - len(winners))
