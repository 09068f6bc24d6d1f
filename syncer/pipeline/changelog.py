"""The applied-change log (AppliedChange): one row per processed change, written by the
apply in its batch's transaction (`changelog_insert`), so it grows as fast as the stream.
Rows older than SYNC_CHANGELOG_RETENTION_HOURS are deleted by the beat task
`syncer.changelog_prune`, in chunks, so no statement holds locks for long."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from syncer.models import AppliedChange
from syncer.store.sql import SqlValues, insert_head

# The values a batch's rows share lead, then those few distinct per batch (event, outcome,
# stream time), so each is escaped once per batch, not once per change.
LOG_COLUMNS = (
    "mapping",
    "applied_at",
    "event_name",
    "outcome",
    "source_time",
    "key",
    "event_id",
    "sequence",
)
APPLIED, STALE = AppliedChange.Outcome.APPLIED.value, AppliedChange.Outcome.STALE.value


def changelog_prune(
    *,
    retention: timedelta | None = None,
    chunk_size: int = 5_000,
    now: datetime | None = None,
) -> int:
    """Delete applied-change rows older than the retention; returns how many went."""
    if retention is None:
        retention = timedelta(hours=settings.SYNC_CHANGELOG_RETENTION_HOURS)
    if retention <= timedelta(0) or chunk_size < 1:
        raise ValueError("retention and chunk_size must be positive")
    cutoff = (now or timezone.now()) - retention
    total = 0
    while True:
        ids = list(
            AppliedChange.objects.filter(applied_at__lt=cutoff)
            .order_by("applied_at")
            .values_list("id", flat=True)[:chunk_size]
        )
        if not ids:
            return total
        # No relations and no signals on the model: one DELETE per chunk.
        total += AppliedChange.objects.filter(id__in=ids).delete()[0]


def changelog_insert(
    *, mapping: str, applied_at: datetime, db_applied_at: str, items: Iterable[Any], winners: set
) -> tuple[str, list[tuple[str, str, float | None]]]:
    """The multi-row INSERT that logs a batch's changes (the apply's ParsedChange items; those
    whose id() is in `winners` were applied, the others stale) and, per change, the
    (event name, outcome, lag in seconds or None) that metrics.applied_record takes."""
    values = SqlValues()
    lit = values.lit
    lead = b"(" + values.lead(mapping, db_applied_at)
    shared: dict[tuple, bytes] = {}  # (event, outcome, source time) -> escaped, once
    lags: dict[datetime, float] = {}
    rows = values.rows
    log: list[tuple[str, str, float | None]] = []
    for item in items:
        outcome = APPLIED if id(item) in winners else STALE
        event, source_time = item.event, item.source_time
        part = shared.get((event, outcome, source_time))
        if part is None:
            part = shared[event, outcome, source_time] = (
                lead + b",".join((lit(event), lit(outcome), lit(item.db_source_time))) + b","
            )
        rows.append(b"%s%s,%s,%d)" % (part, lit(item.key), lit(item.event_id[:128]), item.seq))
        if source_time is None:
            lag = None
        else:
            lag = lags.get(source_time)
            if lag is None:
                lag = lags[source_time] = (applied_at - source_time).total_seconds()
        log.append((event, outcome, lag))
    return values.sql(insert_head(AppliedChange._meta.db_table, LOG_COLUMNS)), log
