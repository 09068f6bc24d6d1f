"""Apply service: stream changes -> the mapped Django model, in bulk, idempotent, ordered.

Guarantees (DESIGN.md invariants 1-3):
- One transaction per batch, bulk statements per mapping (not one query per change).
- Per key, only a change with a higher stream sequence number than the last applied one
  wins (sequence numbers compared as integers). Duplicates and older changes are recorded
  as stale and change nothing, so at-least-once delivery in any order converges.
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

from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from syncer import metrics
from syncer.changes import EVENT_NAMES
from syncer.models import AppliedChange, FailedChange, KeyState
from syncer.registry import Mapping, MappingError, registry

logger = logging.getLogger(__name__)

# MySQL/MariaDB error codes that mean "try again later", not "this change is bad".
TRANSIENT_MYSQL_ERRORS = {
    1040,  # too many connections
    1205,  # lock wait timeout
    1213,  # deadlock
    2002,  # can't connect (socket)
    2003,  # can't connect (TCP)
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection (system error)
    4031,  # client disconnected by the server (wait_timeout)
}


class TransientApplyError(Exception):
    """The batch could not be applied for a reason that may pass; retry it whole."""


@dataclass
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


def is_transient(exc: BaseException) -> bool:
    if not isinstance(exc, OperationalError):
        return False
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    cause = exc.__cause__
    if code is None and cause is not None and getattr(cause, "args", None):
        code = cause.args[0] if isinstance(cause.args[0], int) else None
    # An OperationalError without a code is a connection-level failure.
    return code is None or code in TRANSIENT_MYSQL_ERRORS


# --- parsing --------------------------------------------------------------------------


def _source_time(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), tz=UTC)
    return None


def change_parse(*, change: dict[str, Any], fetch_image=None) -> ParsedChange:
    """Validate one change message against its mapping; raises MappingError."""
    if not isinstance(change, dict):
        raise MappingError("change is not an object")
    event_id = change.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MappingError("change has no id")
    try:
        mapping = registry.for_table(str(change.get("table")))
    except LookupError as exc:
        raise MappingError(str(exc)) from exc
    event = change.get("event")
    if event not in EVENT_NAMES:
        raise MappingError(f"unknown event name {event!r}")
    seq_text = change.get("seq")
    if not isinstance(seq_text, str) or not seq_text.isdigit() or len(seq_text) > 40:
        raise MappingError(f"bad sequence number {seq_text!r}")
    key = mapping.key_from_keys(change.get("keys") or {})
    image = change.get("image")
    if event != "REMOVE" and change.get("fetch"):
        # The record was too large to carry: the current item is at least as new.
        image = (fetch_image or image_fetch)(mapping=mapping, keys=change["keys"])
        if image is None:
            event = "REMOVE"
    row = mapping.row_from_image(image) if event != "REMOVE" else None
    return ParsedChange(
        mapping=mapping,
        key=key,
        event=event,
        seq=int(seq_text),
        row=row,
        version=mapping.version_from_image(image) if event != "REMOVE" else None,
        source_time=_source_time(change.get("ts")),
        event_id=event_id,
        raw=change,
    )


def image_fetch(*, mapping: Mapping, keys: dict[str, Any]) -> dict[str, Any] | None:
    """The current item (DynamoDB JSON) by a consistent read; None when it is gone."""
    from syncer.aws import dynamodb_client

    response = dynamodb_client().get_item(
        TableName=mapping.table_name, Key=keys, ConsistentRead=True
    )
    return response.get("Item")


# --- failed changes -------------------------------------------------------------------


def failed_change_record(
    *,
    change: dict[str, Any],
    error: str,
    source: str = FailedChange.Source.APPLY,
    mapping: str = "",
    key: str = "",
) -> FailedChange:
    """Keep a change that could not be applied; a redelivery of it counts another attempt."""
    now = timezone.now()
    event_id = str(change.get("id") or change.get("eventID") or "")[:128] or f"unknown-{now:%s%f}"
    seq = change.get("seq")
    failed, created = FailedChange.objects.get_or_create(
        event_id=event_id,
        defaults={
            "source": source,
            "mapping": mapping[:64],
            "key": key[:255],
            "event_name": str(change.get("event") or change.get("eventName") or "")[:16],
            "sequence": Decimal(seq) if isinstance(seq, str) and seq.isdigit() else None,
            "payload": change,
            "error": error,
            "first_failed_at": now,
            "last_failed_at": now,
        },
    )
    if not created:
        FailedChange.objects.filter(pk=failed.pk).update(
            attempts=F("attempts") + 1,
            error=error,
            last_failed_at=now,
            status=FailedChange.Status.FAILED,
            resolved_at=None,
        )
        failed.refresh_from_db()
    logger.warning(
        "change failed",
        extra={"event_id": event_id, "key": key, "sequence": seq, "error": error},
    )
    metrics.failed_record(mapping=mapping, event=failed.event_name, source=source)
    return failed


# --- applying -------------------------------------------------------------------------


def changes_apply(*, changes: Iterable[dict[str, Any]], fetch_image=None) -> ApplyResult:
    """Apply a batch of change messages. Raises TransientApplyError to ask for a retry."""
    result = ApplyResult()
    parsed: list[ParsedChange] = []
    invalid: list[tuple[dict[str, Any], str]] = []
    for change in changes:
        try:
            parsed.append(change_parse(change=change, fetch_image=fetch_image))
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
        with transaction.atomic():
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
def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _rows_sql(table: str, columns: list[str], nrows: int) -> str:
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    cols = ", ".join(_q(c) for c in columns)
    return f"INSERT INTO {_q(table)} ({cols}) VALUES " + ", ".join([one] * nrows)


def _locked_sequences(mapping: Mapping, keys: list[str]) -> dict[str, int]:
    """Lock the key state rows of `keys` (creating missing ones) in key order and return
    their sequence numbers. Concurrent batches touching the same keys serialise here."""
    table = _q(KeyState._meta.db_table)

    def select(subset: list[str]) -> dict[str, int]:
        marks = ", ".join(["%s"] * len(subset))
        cur.execute(
            f"SELECT {_q('key')}, {_q('sequence')} FROM {table} "
            f"WHERE {_q('mapping')} = %s AND {_q('key')} IN ({marks}) "
            f"ORDER BY {_q('key')} FOR UPDATE",
            [mapping.name, *subset],
        )
        return {k: int(seq) for k, seq in cur.fetchall()}

    with connection.cursor() as cur:
        found = select(keys)
        missing = [k for k in keys if k not in found]
        if missing:
            # A placeholder row (sequence 0) takes the lock on a new key, so two batches
            # that both see it as new cannot both write its row.
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            sql = _rows_sql(
                KeyState._meta.db_table,
                ["mapping", "key", "sequence", "deleted", "applied_at"],
                len(missing),
            ).replace("INSERT INTO", "INSERT IGNORE INTO", 1)
            cur.execute(sql, [v for k in missing for v in (mapping.name, k, 0, False, now)])
            if cur.rowcount == len(missing):
                found.update(dict.fromkeys(missing, 0))  # all ours: sequence 0, locked
            else:
                found.update(select(missing))  # another batch created some meanwhile
    return found


def _apply_bulk(items: list[ParsedChange]) -> ApplyResult:
    """One batch of one mapping, in the caller's transaction, with multi-row statements:
    lock key states, upsert winners' rows, delete removed ones, record key states and the
    change log. In steady state that is four statements whatever the batch size."""
    mapping = items[0].mapping
    model = mapping.get_model()
    now = timezone.now()
    db_now = connection.ops.adapt_datetimefield_value(now)

    # The newest change per key within the batch; the others are stale by construction.
    newest: dict[str, ParsedChange] = {}
    for item in items:
        best = newest.get(item.key)
        if best is None or item.seq > best.seq:
            newest[item.key] = item
    keys = sorted(newest)
    sequences = _locked_sequences(mapping, keys)
    winners = [newest[k] for k in keys if newest[k].seq > sequences[k]]
    upserts = [w for w in winners if w.event != "REMOVE"]
    removes = [w.key for w in winners if w.event == "REMOVE"]

    with connection.cursor() as cur:
        if upserts:
            key_field = model._meta.get_field(mapping.key_field)
            fields = [model._meta.get_field(fm.field) for fm in mapping.fields]
            columns = [key_field.column, *(f.column for f in fields)]
            params: list[Any] = []
            for w in upserts:
                row = w.row or {}
                params.append(w.key)
                params.extend(f.get_db_prep_save(row.get(f.name), connection) for f in fields)
            updates = ", ".join(f"{_q(f.column)} = VALUES({_q(f.column)})" for f in fields)
            # ON DUPLICATE KEY UPDATE matches the key column's unique index.
            cur.execute(
                _rows_sql(model._meta.db_table, columns, len(upserts))
                + f" ON DUPLICATE KEY UPDATE {updates}",
                params,
            )
        if removes:
            marks = ", ".join(["%s"] * len(removes))
            cur.execute(
                f"DELETE FROM {_q(model._meta.db_table)} "
                f"WHERE {_q(model._meta.get_field(mapping.key_field).column)} IN ({marks})",
                removes,
            )
        if winners:
            # The rows exist and are locked by this transaction.
            state_columns = [
                "mapping",
                "key",
                "sequence",
                "deleted",
                "item_version",
                "source_time",
                "applied_at",
            ]
            params = []
            for w in winners:
                params += [
                    mapping.name,
                    w.key,
                    w.seq,
                    w.event == "REMOVE",
                    w.version,
                    connection.ops.adapt_datetimefield_value(w.source_time),
                    db_now,
                ]
            updates = ", ".join(f"{_q(c)} = VALUES({_q(c)})" for c in state_columns[2:])
            cur.execute(
                _rows_sql(KeyState._meta.db_table, state_columns, len(winners))
                + f" ON DUPLICATE KEY UPDATE {updates}",
                params,
            )
        winner_ids = {id(w) for w in winners}
        log_columns = [
            "mapping",
            "key",
            "event_id",
            "event_name",
            "sequence",
            "outcome",
            "source_time",
            "applied_at",
        ]
        params = []
        log: list[tuple[str, str, float | None]] = []
        for item in items:
            outcome = (
                AppliedChange.Outcome.APPLIED
                if id(item) in winner_ids
                else AppliedChange.Outcome.STALE
            )
            params += [
                mapping.name,
                item.key,
                item.event_id[:128],
                item.event,
                item.seq,
                outcome,
                connection.ops.adapt_datetimefield_value(item.source_time),
                db_now,
            ]
            lag = (now - item.source_time).total_seconds() if item.source_time else None
            log.append((item.event, outcome, lag))
        cur.execute(_rows_sql(AppliedChange._meta.db_table, log_columns, len(items)), params)

    metrics.applied_record(mapping=mapping.name, items=log)
    if logger.isEnabledFor(logging.DEBUG):
        for item in winners:
            logger.debug(
                "applied %s",
                item.event,
                extra={"key": item.key, "sequence": str(item.seq), "event_id": item.event_id},
            )
    return ApplyResult(applied=len(winners), stale=len(items) - len(winners))
