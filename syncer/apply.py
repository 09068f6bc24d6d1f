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

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import DatabaseError, OperationalError, transaction
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


def _apply_bulk(items: list[ParsedChange]) -> ApplyResult:
    mapping = items[0].mapping
    model = mapping.get_model()
    now = timezone.now()

    # The newest change per key within the batch; the others are stale by construction.
    newest: dict[str, ParsedChange] = {}
    for item in items:
        best = newest.get(item.key)
        if best is None or item.seq > best.seq:
            newest[item.key] = item
    keys = sorted(newest)

    # Lock the per-key state rows in key order (creating missing ones first) so that
    # concurrent batches touching the same keys serialise instead of interleaving.
    KeyState.objects.bulk_create(
        [KeyState(mapping=mapping.name, key=k, sequence=0, applied_at=now) for k in keys],
        ignore_conflicts=True,
    )
    states = {
        s.key: s
        for s in KeyState.objects.select_for_update()
        .filter(mapping=mapping.name, key__in=keys)
        .order_by("key")
    }

    winners = [newest[k] for k in keys if newest[k].seq > int(states[k].sequence)]
    upserts = [w for w in winners if w.event != "REMOVE"]
    removes = [w.key for w in winners if w.event == "REMOVE"]

    if upserts:
        field_names = [fm.field for fm in mapping.fields]
        model.objects.bulk_create(
            [model(**{mapping.key_field: w.key, **(w.row or {})}) for w in upserts],
            update_conflicts=True,
            # MySQL's ON DUPLICATE KEY UPDATE matches on the key's unique index.
            update_fields=field_names,
        )
    if removes:
        model.objects.filter(**{f"{mapping.key_field}__in": removes}).delete()

    changed_states = []
    for w in winners:
        state = states[w.key]
        state.sequence = Decimal(w.seq)
        state.deleted = w.event == "REMOVE"
        state.item_version = w.version
        state.source_time = w.source_time
        state.applied_at = now
        changed_states.append(state)
    if changed_states:
        # The rows exist and are locked: a multi-row INSERT ... ON DUPLICATE KEY UPDATE on
        # their primary keys writes them in one cheap statement (bulk_update's CASE WHEN
        # per row took most of the batch's time).
        KeyState.objects.bulk_create(
            changed_states,
            update_conflicts=True,
            update_fields=["sequence", "deleted", "item_version", "source_time", "applied_at"],
        )

    winner_ids = {id(w) for w in winners}
    log = [
        AppliedChange(
            mapping=mapping.name,
            key=item.key,
            event_id=item.event_id[:128],
            event_name=item.event,
            sequence=Decimal(item.seq),
            outcome=(
                AppliedChange.Outcome.APPLIED
                if id(item) in winner_ids
                else AppliedChange.Outcome.STALE
            ),
            source_time=item.source_time,
            applied_at=now,
        )
        for item in items
    ]
    AppliedChange.objects.bulk_create(log)
    metrics.applied_record(
        mapping=mapping.name,
        items=[
            (
                c.event_name,
                c.outcome,
                (now - c.source_time).total_seconds() if c.source_time else None,
            )
            for c in log
        ],
    )
    for item in winners:
        logger.debug(
            "applied %s",
            item.event,
            extra={"key": item.key, "sequence": str(item.seq), "event_id": item.event_id},
        )
    return ApplyResult(applied=len(winners), stale=len(items) - len(winners))
