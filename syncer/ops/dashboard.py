"""Selectors for the operator's sync dashboard (admin) and the metrics gauges.

Figures come from the sync's own bookkeeping in MySQL (AppliedBatch: per batch the changes
applied and their lags, source time -> applied_at) and, for queue depths, from SQS. SQS
being unreachable never breaks the page: its figures show as unavailable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import models
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django.utils.timesince import timesince

from syncer.models import AppliedBatch, Conflict, FailedChange, OutboxEntry, ShardCheckpoint
from syncer.pipeline.stream.contract import RecordError, table_from_stream_arn

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=1)


def _recent(*, now: datetime, window: timedelta = WINDOW) -> models.QuerySet[AppliedBatch]:
    return AppliedBatch.objects.filter(applied_at__gt=now - window)


# --- lag ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LagSummary:
    samples: int
    p50: float | None  # seconds
    p99: float | None
    max: float | None


def lag_summary_get(*, now: datetime | None = None, window: timedelta = WINDOW) -> LagSummary:
    """Lag percentiles (nearest rank, to the millisecond) of the changes applied within the
    window.

    Each batch row carries its applied changes' lags as counts per millisecond (`lags`, a
    handful of values: stream times are coarse), so the window's distribution is those
    counts merged, never one row per change."""
    now = now or timezone.now()
    counts: dict[int, int] = {}
    rows = _recent(now=now, window=window).values_list("lags", flat=True)
    for lags in rows.iterator(chunk_size=2000):
        for ms, n in lags.items():
            counts[int(ms)] = counts.get(int(ms), 0) + n
    n = sum(counts.values())
    if not n:
        return LagSummary(samples=0, p50=None, p99=None, max=None)
    ordered = sorted(counts.items())

    def at(percent: int) -> float:
        rank = max(1, (percent * n + 99) // 100)  # ceil(percent% of n): nearest rank
        seen = 0
        for ms, count in ordered:
            seen += count
            if seen >= rank:
                return ms / 1000
        raise AssertionError("rank beyond the samples")  # pragma: no cover

    return LagSummary(samples=n, p50=at(50), p99=at(99), max=at(100))


# --- throughput over time -----------------------------------------------------------------


@dataclass(frozen=True)
class MinutePoint:
    minute: datetime
    applied: int
    lag_max: float | None  # seconds


def minutes_get(*, now: datetime | None = None, window: timedelta = WINDOW) -> list[MinutePoint]:
    """One point per minute of the window (empty minutes included): changes applied and the
    largest lag among them."""
    now = now or timezone.now()
    rows = (
        _recent(now=now, window=window)
        .annotate(minute=TruncMinute("applied_at"))
        .values("minute")
        .annotate(n=Sum("applied"), lag=Max("lag_max"))
        .order_by("minute")
    )
    by_minute = {r["minute"]: r for r in rows}
    end = now.replace(second=0, microsecond=0)
    points = []
    steps = int(window.total_seconds() // 60)
    for i in range(steps - 1, -1, -1):
        minute = end - timedelta(minutes=i)
        row = by_minute.get(minute)
        points.append(
            MinutePoint(
                minute=minute,
                applied=int(row["n"]) if row else 0,
                lag_max=row["lag"] if row else None,
            )
        )
    return points


# --- counts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncCounts:
    applied_total: int
    applied_last_hour: int
    stale_total: int
    failed_open: int
    failed_total: int
    conflicts_open: int
    outbox_pending: int
    outbox_failed: int
    last_apply: datetime | None


def counts_get(*, now: datetime | None = None) -> SyncCounts:
    now = now or timezone.now()
    applied = AppliedBatch.objects.aggregate(
        total=Sum("applied"),
        recent=Sum("applied", filter=Q(applied_at__gt=now - WINDOW)),
        stale_total=Sum("stale"),
        last=Max("applied_at"),
    )
    failed = FailedChange.objects.aggregate(
        open=Count("id", filter=Q(status=FailedChange.Status.FAILED)), total=Count("id")
    )
    outbox = OutboxEntry.objects.aggregate(
        pending=Count("id", filter=Q(status=OutboxEntry.Status.PENDING)),
        failed=Count("id", filter=Q(status=OutboxEntry.Status.FAILED)),
    )
    return SyncCounts(
        applied_total=int(applied["total"] or 0),  # SUM: NULL over no rows
        applied_last_hour=int(applied["recent"] or 0),
        stale_total=int(applied["stale_total"] or 0),
        failed_open=failed["open"],
        failed_total=failed["total"],
        conflicts_open=Conflict.objects.filter(resolved=False).count(),
        outbox_pending=outbox["pending"],
        outbox_failed=outbox["failed"],
        last_apply=applied["last"],
    )


# --- queues -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueDepth:
    label: str
    name: str
    visible: int | None = None  # None: unavailable
    in_flight: int | None = None
    error: str = ""

    @property
    def available(self) -> bool:
        return self.visible is not None


def _queue_depth(client, *, label: str, name: str, url: str | None) -> QueueDepth:
    if url is None:
        url = client.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return QueueDepth(
        label=label,
        name=name,
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
    )


def queue_depths_get() -> list[QueueDepth]:
    """Depth of the sync, outbox and reconcile queues and their dead-letter queues.

    A queue that cannot be read shows as unavailable; after a connection failure the
    remaining queues are not tried (the endpoint is down: no point in waiting for each).
    """
    from syncer.aws import sqs_client

    wanted = [
        ("sync queue", settings.SYNC_QUEUE_NAME, settings.SYNC_QUEUE_URL),
        ("sync dead-letter queue", settings.SYNC_DLQ_NAME, settings.SYNC_DLQ_URL),
        ("outbox queue", settings.OUTBOX_QUEUE_NAME, settings.OUTBOX_QUEUE_URL),
        ("outbox dead-letter queue", settings.OUTBOX_DLQ_NAME, settings.OUTBOX_DLQ_URL),
        ("reconcile queue", settings.RECONCILE_QUEUE_NAME, settings.RECONCILE_QUEUE_URL),
        ("reconcile dead-letter queue", settings.RECONCILE_DLQ_NAME, settings.RECONCILE_DLQ_URL),
    ]
    depths: list[QueueDepth] = []
    unreachable = ""
    for label, name, url in wanted:
        if unreachable:
            depths.append(QueueDepth(label=label, name=name, error=unreachable))
            continue
        try:
            depths.append(_queue_depth(sqs_client(), label=label, name=name, url=url))
        except ClientError as exc:
            error = exc.response.get("Error", {}).get("Code") or str(exc)
            depths.append(QueueDepth(label=label, name=name, error=error))
        except BotoCoreError as exc:
            logger.warning("SQS unreachable for the dashboard: %s", exc)
            unreachable = f"SQS unreachable: {exc}"
            depths.append(QueueDepth(label=label, name=name, error=unreachable))
    return depths


# --- relay --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointRow:
    table: str
    shard_id: str
    sequence_number: str
    finished: bool
    records_total: int
    last_batch_size: int
    last_batch_at: datetime | None


def _table_of(stream_arn: str) -> str:
    try:
        return table_from_stream_arn(stream_arn)
    except RecordError:
        return stream_arn  # shown as it is rather than hidden


def checkpoints_get() -> list[CheckpointRow]:
    return [
        CheckpointRow(
            table=_table_of(cp.stream_arn),
            shard_id=cp.shard_id,
            sequence_number=cp.sequence_number,
            finished=cp.finished,
            records_total=cp.records_total,
            last_batch_size=cp.last_batch_size,
            last_batch_at=cp.last_batch_at,
        )
        for cp in ShardCheckpoint.objects.order_by("stream_arn", "shard_id")
    ]


# --- everything for the page --------------------------------------------------------------


def age_text(*, since: datetime, now: datetime) -> str:
    """How long ago, for people: seconds under a minute ("42 seconds"; Django's timesince
    says "0 minutes" there, which reads as "just now" on a page that must show a stall)."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    return timesince(since, now)


@dataclass
class Dashboard:
    now: datetime
    lag: LagSummary
    minutes: list[MinutePoint]
    counts: SyncCounts
    queues: list[QueueDepth]
    checkpoints: list[CheckpointRow] = field(default_factory=list)

    @property
    def last_apply_age(self) -> str | None:
        last = self.counts.last_apply
        return age_text(since=last, now=self.now) if last else None

    @property
    def relay_last_batch_age(self) -> str | None:
        last = self.relay_last_batch
        return age_text(since=last, now=self.now) if last else None

    @property
    def relay_last_batch(self) -> datetime | None:
        times = [c.last_batch_at for c in self.checkpoints if c.last_batch_at]
        return max(times) if times else None


def dashboard_get(*, now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    return Dashboard(
        now=now,
        lag=lag_summary_get(now=now),
        minutes=minutes_get(now=now),
        counts=counts_get(now=now),
        queues=queue_depths_get(),
        checkpoints=checkpoints_get(),
    )
