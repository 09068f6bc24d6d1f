"""The applied-change log (AppliedBatch): one row per batch the apply processed, holding
each of its changes (`entries`), written by the apply in the batch's transaction
(`changelog_insert`). Rows older than SYNC_CHANGELOG_RETENTION_HOURS are deleted by the
beat task `syncer.changelog_prune`, in chunks, so no statement holds locks for long."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from syncer.models import AppliedBatch, compress_json
from syncer.store.sql import SqlValues, insert_head

LOG_COLUMNS = ("mapping", "applied_at", "applied", "stale", "lag_max", "lags", "entries")
APPLIED, STALE = AppliedBatch.Outcome.APPLIED.value, AppliedBatch.Outcome.STALE.value


def changelog_prune(
    *,
    retention: timedelta | None = None,
    chunk_size: int = 1_000,
    now: datetime | None = None,
) -> int:
    """Delete log rows (batches) older than the retention; returns how many went."""
    if retention is None:
        retention = timedelta(hours=settings.SYNC_CHANGELOG_RETENTION_HOURS)
    if retention <= timedelta(0) or chunk_size < 1:
        raise ValueError("retention and chunk_size must be positive")
    cutoff = (now or timezone.now()) - retention
    total = 0
    while True:
        ids = list(
            AppliedBatch.objects.filter(applied_at__lt=cutoff)
            .order_by("applied_at")
            .values_list("id", flat=True)[:chunk_size]
        )
        if not ids:
            return total
        # No relations and no signals on the model: one DELETE per chunk.
        total += AppliedBatch.objects.filter(id__in=ids).delete()[0]


def changelog_fields(entries: list[list[Any]]) -> dict[str, Any]:
    """A batch row's summary columns (applied, stale, lag_max, lags) from its `entries`
    (AppliedBatch.ENTRY_FIELDS order)."""
    applied = stale = 0
    lag_max: float | None = None
    lags: dict[str, int] = {}
    for entry in entries:
        if entry[4] != APPLIED:
            stale += 1
            continue
        applied += 1
        lag = entry[5]
        if lag is not None:
            lag_max = lag if lag_max is None else max(lag_max, lag)
            ms = _lag_key(lag)
            lags[ms] = lags.get(ms, 0) + 1
    return {"applied": applied, "stale": stale, "lag_max": lag_max, "lags": lags}


@dataclass(slots=True)
class Tally:
    """A batch's changes counted for the metrics: per (event name, outcome), and the
    applied changes' lags (seconds, to the ms) as value -> how many."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    lags: dict[float, int] = field(default_factory=dict)


def changelog_insert(
    *, mapping: str, applied_at: datetime, db_applied_at: str, items: Iterable[Any], winners: set
) -> tuple[str, Tally]:
    """The INSERT of a batch's one log row (the apply's ParsedChange items; those whose id()
    is in `winners` were applied, the others stale), and the batch's Tally for the metrics.

    Its summary columns are those `changelog_fields` gives for its entries, counted in the
    same pass that builds them (this is the apply's hot path)."""
    lag_of: dict[datetime, float] = {}  # source times repeat within a batch (coarse)
    entries: list[tuple[Any, ...]] = []
    append = entries.append
    tally = Tally()
    counts, lags = tally.counts, tally.lags
    for item in items:
        applied = id(item) in winners
        outcome = APPLIED if applied else STALE
        event = item.event
        counts[event, outcome] = counts.get((event, outcome), 0) + 1
        source_time = item.source_time
        if source_time is None:
            lag = None
        else:
            lag = lag_of.get(source_time)
            if lag is None:
                lag = lag_of[source_time] = round((applied_at - source_time).total_seconds(), 3)
            if applied:
                lags[lag] = lags.get(lag, 0) + 1
        # A tuple is written as a JSON array, as a list is, and costs less to build.
        append((item.event_id[:128], item.key, str(item.seq), event, outcome, lag))
    applied_n = sum(n for (_, outcome), n in counts.items() if outcome == APPLIED)
    values = SqlValues()
    values.add(
        (
            mapping,
            db_applied_at,
            applied_n,
            len(entries) - applied_n,
            max(lags) if lags else None,
            _json({_lag_key(lag): n for lag, n in lags.items()}),
            compress_json(entries),  # bytes: SqlValues writes them as a hex literal
        )
    )
    return values.sql(insert_head(AppliedBatch._meta.db_table, LOG_COLUMNS)), tally


def _lag_key(lag: float) -> str:
    """A lag (seconds) as a key of the `lags` column: whole milliseconds, as JSON text."""
    return str(round(lag * 1000))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
