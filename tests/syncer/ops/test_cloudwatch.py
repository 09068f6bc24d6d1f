"""The dashboard's figures published to CloudWatch (moto), and the beat entry that does it."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from syncer.models import OutboxEntry
from syncer.ops import cloudwatch, dashboard
from tests.factories import FailedChangeFactory, OutboxEntryFactory
from tests.syncer.ops.test_dashboard import applied

pytestmark = pytest.mark.django_db

NAMESPACE = "BacksyncTest"


def _published(name: str) -> list[float]:
    """Every value CloudWatch (moto) holds for one metric of the namespace."""
    client = boto3.client("cloudwatch", endpoint_url=settings.AWS_ENDPOINT_URL)
    now = timezone.now()
    stats = client.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=name,
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )
    return [p["Maximum"] for p in stats["Datapoints"]]


def _fill(now):
    for i in range(3):
        applied(lag=2 + i, ago=10 + i, key=f"recent{i}", now=now)  # in the last minute
    applied(lag=50, ago=600, key="older", now=now)  # applied, but not in this period
    for status in ["failed", "failed", "replayed"]:
        FailedChangeFactory(status=status, first_failed_at=now)
    for status in ["pending"] * 4 + ["published", "failed"]:
        OutboxEntryFactory(status=status)


@override_settings(CLOUDWATCH_METRICS=True, CLOUDWATCH_NAMESPACE=NAMESPACE)
def test_publish_sends_the_dashboards_figures(aws):
    now = timezone.now()
    _fill(now)
    sent = {d.name: d.value for d in cloudwatch.cloudwatch_metrics_publish(now=now)}

    counts = dashboard.counts_get(now=now)
    assert sent["OutboxBacklog"] == counts.outbox_pending == 4
    assert sent["OutboxFailed"] == counts.outbox_failed == 1
    assert sent["FailedChangesOpen"] == counts.failed_open == 2
    assert sent["ChangesApplied"] == 3
    assert sent["SyncLagP99"] == pytest.approx(4, abs=0.01)
    # What CloudWatch holds is what was sent.
    assert _published("OutboxBacklog") == [4]
    assert _published("FailedChangesOpen") == [2]
    assert _published("ChangesApplied") == [3]
    assert _published("SyncLagP99") == [pytest.approx(4, abs=0.01)]


@override_settings(CLOUDWATCH_METRICS=True, CLOUDWATCH_NAMESPACE=NAMESPACE)
def test_no_lag_figure_without_applies(aws):
    sent = {d.name for d in cloudwatch.cloudwatch_metrics_publish()}
    assert "OutboxBacklog" in sent
    assert not sent & {"SyncLagP50", "SyncLagP99"}
    assert _published("OutboxBacklog") == [0]


@override_settings(CLOUDWATCH_METRICS=False, CLOUDWATCH_NAMESPACE=NAMESPACE)
def test_publish_is_off_unless_enabled(aws):
    _fill(timezone.now())
    assert cloudwatch.cloudwatch_metrics_publish() == []
    assert _published("OutboxBacklog") == []


def test_every_figure_is_a_known_metric_name():
    with override_settings(CLOUDWATCH_METRICS=True):
        now = timezone.now()
        applied(lag=1, ago=5, key="one", now=now)
        names = {d.name for d in cloudwatch.cloudwatch_figures_get(now=now)}
    assert names == cloudwatch.METRIC_NAMES


def test_beat_schedules_the_publish_every_period():
    from syncer.ops import CLOUDWATCH_PUBLISH_TASK_NAME, tasks

    entry = settings.CELERY_BEAT_SCHEDULE["cloudwatch-publish"]
    assert entry["task"] == CLOUDWATCH_PUBLISH_TASK_NAME == tasks.cloudwatch_publish.name
    assert entry["schedule"] == settings.CLOUDWATCH_METRICS_SECONDS


@pytest.mark.e2e
def test_a_real_beat_and_worker_publish_the_figures(stack_env, tmp_path):
    # As in ECS: beat schedules, a worker sends; here both from one `celery worker --beat`.
    from tests.procs import ManagedProcess, wait_until, worker_argv

    OutboxEntry.objects.create(
        mapping="chef", object_pk="1", op="upsert", values={}, status="failed"
    )
    env = {
        **stack_env,
        "CLOUDWATCH_METRICS": "true",
        "CLOUDWATCH_NAMESPACE": NAMESPACE,
        "CLOUDWATCH_METRICS_SECONDS": "2",
    }
    proc = ManagedProcess(
        "worker", worker_argv(schedule=tmp_path / "beat-schedule"), env=env, log_dir=tmp_path
    ).start()
    try:
        values = wait_until(
            lambda: _published("OutboxFailed"), timeout=60, what="OutboxFailed in CloudWatch"
        )
    finally:
        proc.stop()
    assert set(values) == {1}, proc.log_tail()
