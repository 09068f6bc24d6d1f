"""The outbox sweep (entries whose publish is due or whose task may be lost) and the
operator's actions on failed entries and conflicts."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from syncer.models import OutboxEntry
from syncer.outbox import record
from syncer.outbox.publish import outbox_publish


def outbox_due(*, now=None) -> models.QuerySet[OutboxEntry]:
    """Pending entries whose publish is due: after a failure's backoff, or whose task may be
    lost (not published OUTBOX_LOST_AFTER_SECONDS after it was enqueued)."""
    now = now or timezone.now()
    lost = now - timedelta(seconds=settings.OUTBOX_LOST_AFTER_SECONDS)
    return OutboxEntry.objects.filter(status=OutboxEntry.Status.PENDING).filter(
        Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lte=lost)
    )


def outbox_sweep(*, inline: bool = False, limit: int = 1000) -> int:
    """Publish again what is due, one publish per legacy row. Returns how many rows.

    Each row swept is not due again for OUTBOX_LOST_AFTER_SECONDS, so entries whose task is
    only waiting behind others in the queue are not enqueued again and again."""
    now = timezone.now()
    heads = list(
        outbox_due(now=now)
        .values("mapping", "object_pk")
        .annotate(first=models.Min("pk"))
        .order_by("first")[:limit]
    )
    retry_at = now + timedelta(seconds=settings.OUTBOX_LOST_AFTER_SECONDS)
    for head in heads:
        OutboxEntry.objects.filter(
            mapping=head["mapping"], object_pk=head["object_pk"], status="pending"
        ).update(next_attempt_at=retry_at)
        if inline:
            outbox_publish(entry_id=head["first"])
        else:
            record.outbox_enqueue(entry_id=head["first"])
    return len(heads)


def outbox_retry_failed(*, entries: models.QuerySet[OutboxEntry]) -> int:
    """Operator action: give exhausted entries a fresh set of attempts."""
    return entries.filter(status=OutboxEntry.Status.FAILED).update(
        status=OutboxEntry.Status.PENDING, attempts=0, next_attempt_at=None, last_error=""
    )


def conflicts_resolve(*, conflicts) -> int:
    """Operator action: a reviewed conflict no longer flags its row."""
    return conflicts.filter(resolved=False).update(resolved=True)
