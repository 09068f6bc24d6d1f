"""Retention of the applied-change log (AppliedChange): one row per processed change, so it
grows as fast as the stream. Rows older than SYNC_CHANGELOG_RETENTION_HOURS are deleted by
the beat task `syncer.changelog_prune`, in chunks, so no statement holds locks for long."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from syncer.models import AppliedChange


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
