"""Apply service: stream changes -> the mapped Django model, in bulk, idempotent, ordered.

Owns parsing change messages, keeping failed changes, bisecting a refused batch, the
applied-change log and the results and metrics; the row writes and the sequence guard
below are the MySQL writer's (syncer.store.mysql, Guard.SEQUENCE).

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

from django.db import DatabaseError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from syncer.models import FailedChange
from syncer.ops import metrics
from syncer.pipeline.changelog import Tally, changelog_insert
from syncer.pipeline.stream.contract import EVENT_NAMES, sequence_valid
from syncer.registry import Mapping, MappingError, registry
from syncer.store.dynamo import image_fetch
from syncer.store.mysql import db_time as _db_time
from syncer.store.mysql import rows_write

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
    if not sequence_valid(seq_text):
        raise MappingError(f"bad sequence number {seq_text!r}")
    key = mapping.key_from_keys(change.get("keys") or {})
    row = version = None  # REMOVE
    if event != "REMOVE":
        image = change.get("image")
        if change.get("fetch"):
            # The record was too large to carry: the current item is at least as new.
            image = (fetch_image or image_fetch)(mapping=mapping, keys=change["keys"])
            if image is None:
                event = "REMOVE"
        if event != "REMOVE":
            row = mapping.row_from_image(image)
            version = mapping.version_from_image(image)
    ts = change.get("ts")
    if type(ts) in (int, float):
        source_time, db_time = _source_times(ts)
    else:
        source_time = _source_time(ts)
        db_time = _db_time(source_time)
    # Positional: the dataclass's field order (cheaper than keywords, once per change).
    return ParsedChange(
        mapping, key, event, int(seq_text), row, version, source_time, event_id, change, db_time
    )


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
            "sequence": Decimal(sequence) if sequence_valid(sequence) else None,
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


def _apply_bulk(items: list[ParsedChange]) -> ApplyResult:
    """One batch of one mapping through the MySQL writer (sequence guard), in one
    transaction and two round trips; the change log rides with the row writes."""
    mapping = items[0].mapping
    now = timezone.now()
    tally = Tally()

    def changelog(winners: list[ParsedChange]) -> list[str]:
        # The applied-change log rides in the writer's second round trip.
        nonlocal tally
        statement, tally = changelog_insert(
            mapping=mapping.name,
            applied_at=now,
            db_applied_at=_db_time(now),
            items=items,
            winners={id(w) for w in winners},
        )
        return [statement]

    winners = rows_write(mapping=mapping, changes=items, now=now, log=changelog).winners

    metrics.applied_record(mapping=mapping.name, counts=tally.counts, lags=tally.lags)
    if logger.isEnabledFor(logging.DEBUG):
        for item in winners:
            logger.debug(
                "applied %s",
                item.event,
                extra={"key": item.key, "sequence": str(item.seq), "event_id": item.event_id},
            )
    return ApplyResult(applied=len(winners), stale=len(items) - len(winners))
