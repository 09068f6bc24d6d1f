"""The sync dashboard's figures as CloudWatch metrics, for the stack's alarms and dashboard.

In ECS the worker's Prometheus counters reach no scraper, and CloudWatch alarms need
CloudWatch metrics. The beat schedules `syncer.cloudwatch_publish` every
`CLOUDWATCH_METRICS_SECONDS`; a worker runs it and sends one PutMetricData with the same
figures the admin dashboard shows, read from MySQL (so whichever process changed them):
outbox backlog and failures, open failed changes and conflicts, changes applied in the
last period and the lag percentiles over the last five minutes.

The metric names are the ones `deploy/backsync_stack/monitoring.py` alarms on; the
namespace (`CLOUDWATCH_NAMESPACE`) is the one the stack sets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from syncer.models import AppliedBatch
from syncer.ops import dashboard

logger = logging.getLogger(__name__)

LAG_WINDOW = timedelta(minutes=5)
# Metric names (the stack's alarms and dashboard use the same strings; a deploy test
# checks that every name they use is one published here).
OUTBOX_BACKLOG = "OutboxBacklog"
OUTBOX_FAILED = "OutboxFailed"
FAILED_CHANGES_OPEN = "FailedChangesOpen"
CONFLICTS_OPEN = "ConflictsOpen"
CHANGES_APPLIED = "ChangesApplied"
SYNC_LAG_P50 = "SyncLagP50"
SYNC_LAG_P99 = "SyncLagP99"
METRIC_NAMES = frozenset(
    {
        OUTBOX_BACKLOG,
        OUTBOX_FAILED,
        FAILED_CHANGES_OPEN,
        CONFLICTS_OPEN,
        CHANGES_APPLIED,
        SYNC_LAG_P50,
        SYNC_LAG_P99,
    }
)


@dataclass(frozen=True)
class Datum:
    name: str
    value: float
    unit: str  # CloudWatch unit: Count, Seconds

    def as_metric_data(self, timestamp: datetime) -> dict:
        return {
            "MetricName": self.name,
            "Value": self.value,
            "Unit": self.unit,
            "Timestamp": timestamp,
        }


def cloudwatch_figures_get(*, now: datetime | None = None) -> list[Datum]:
    """The figures one publish sends; lag only when changes were applied in its window."""
    now = now or timezone.now()
    period = timedelta(seconds=settings.CLOUDWATCH_METRICS_SECONDS)
    counts = dashboard.counts_get(now=now)
    applied = AppliedBatch.objects.filter(
        applied_at__gt=now - period, applied_at__lte=now
    ).aggregate(n=Sum("applied"))["n"]
    data = [
        Datum(OUTBOX_BACKLOG, counts.outbox_pending, "Count"),
        Datum(OUTBOX_FAILED, counts.outbox_failed, "Count"),
        Datum(FAILED_CHANGES_OPEN, counts.failed_open, "Count"),
        Datum(CONFLICTS_OPEN, counts.conflicts_open, "Count"),
        Datum(CHANGES_APPLIED, int(applied or 0), "Count"),
    ]
    lag = dashboard.lag_summary_get(now=now, window=LAG_WINDOW)
    if lag.samples:
        data += [
            Datum(SYNC_LAG_P50, lag.p50, "Seconds"),
            Datum(SYNC_LAG_P99, lag.p99, "Seconds"),
        ]
    return data


def cloudwatch_metrics_publish(*, now: datetime | None = None) -> list[Datum]:
    """Send the figures to CloudWatch (namespace CLOUDWATCH_NAMESPACE) and return them.

    Does nothing unless CLOUDWATCH_METRICS is on (the AWS stack sets it). An AWS error
    propagates: the task fails visibly in the worker's log, and the next period tries again.
    """
    if not settings.CLOUDWATCH_METRICS:
        return []
    from syncer.aws import cloudwatch_client

    now = now or timezone.now()
    data = cloudwatch_figures_get(now=now)
    cloudwatch_client().put_metric_data(
        Namespace=settings.CLOUDWATCH_NAMESPACE,
        MetricData=[d.as_metric_data(now) for d in data],
    )
    logger.info(
        "published %d CloudWatch metrics",
        len(data),
        extra={"metrics": {d.name: d.value for d in data}},
    )
    return data
