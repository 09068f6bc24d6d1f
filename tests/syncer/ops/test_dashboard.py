"""The sync dashboard: its figures (selectors), the SVG chart, and the staff-only admin page."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from syncer.models import Conflict, ShardCheckpoint
from syncer.ops import dashboard
from syncer.ops.views import chart_svg
from tests.factories import (
    AppliedBatchFactory,
    FailedChangeFactory,
    OutboxEntryFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def applied(*, lag: float, ago: float = 60.0, outcome="applied", key="k", now=None):
    """A batch of one change, applied `ago` seconds before `now` with that lag."""
    now = now or timezone.now()
    entries = [[f"ev-{key}-{lag}-{ago}", key, "1", "INSERT", outcome, lag]]
    return AppliedBatchFactory(applied_at=now - timedelta(seconds=ago), entries=entries)


def test_lag_percentiles_merge_the_batches_counts():
    """Batches of many changes: the percentiles are those of the changes, not the batches."""
    now = timezone.now()
    AppliedBatchFactory(applied_at=now, seconds=[0.1] * 98)
    AppliedBatchFactory(applied_at=now, seconds=[0.25, 2.0])
    summary = dashboard.lag_summary_get(now=now)
    assert (summary.samples, summary.p50, summary.p99, summary.max) == (100, 0.1, 0.25, 2.0)


def test_lag_percentiles_over_the_last_hour_only():
    now = timezone.now()
    for lag in range(1, 101):  # 1..100 s: nearest-rank p50 = 50, p99 = 99
        applied(lag=lag, ago=lag * 10, key=f"k{lag}", now=now)
    applied(lag=9999, ago=2 * 3600, key="old", now=now)  # outside the window
    applied(lag=5000, ago=30, key="stale", outcome="stale", now=now)  # not an apply
    summary = dashboard.lag_summary_get(now=now)
    assert summary.samples == 100
    assert summary.p50 == pytest.approx(50, abs=0.01)
    assert summary.p99 == pytest.approx(99, abs=0.01)
    assert summary.max == pytest.approx(100, abs=0.01)


def test_lag_summary_without_data():
    assert dashboard.lag_summary_get() == dashboard.LagSummary(0, None, None, None)


def test_minutes_count_throughput_and_largest_lag_per_minute():
    now = timezone.now().replace(second=30, microsecond=0)
    for i in range(3):
        applied(lag=1 + i, ago=0 + i, key=f"a{i}", now=now)  # this minute
    applied(lag=7, ago=5 * 60, key="b", now=now)  # five minutes ago
    points = dashboard.minutes_get(now=now)
    assert len(points) == 60
    assert points[-1].minute == now.replace(second=0)
    assert (points[-1].applied, points[-1].lag_max) == (3, pytest.approx(3))
    assert (points[-6].applied, points[-6].lag_max) == (1, pytest.approx(7))
    assert sum(p.applied for p in points) == 4

    svg = str(chart_svg(points))
    assert svg.count('<rect class="bar"') == 2  # one per minute with changes
    assert svg.count('class="lag-dot"') == 2
    assert "<script" not in svg


def test_counts():
    now = timezone.now()
    applied(lag=1, key="a", now=now)
    applied(lag=1, key="b", now=now)
    applied(lag=1, key="c", ago=3 * 3600, now=now)
    applied(lag=1, key="d", outcome="stale", now=now)
    for status in ["failed", "failed", "replayed"]:
        FailedChangeFactory(status=status, first_failed_at=now)
    for status in ["pending", "pending", "published", "failed"]:
        OutboxEntryFactory(status=status)
    for resolved in [False, True]:
        Conflict.objects.create(
            mapping="chef",
            object_pk="1",
            kind="stale_version",
            legacy_op="upsert",
            legacy_values={},
            legacy_time=now,
            resolved=resolved,
        )
    c = dashboard.counts_get(now=now)
    assert (c.applied_total, c.applied_last_hour, c.stale_total) == (3, 2, 1)
    assert (c.failed_open, c.failed_total) == (2, 3)
    assert c.conflicts_open == 1
    assert (c.outbox_pending, c.outbox_failed) == (2, 1)
    assert abs((c.last_apply - (now - timedelta(seconds=60))).total_seconds()) < 1


def test_queue_depths_from_sqs(aws):
    from syncer.aws import sqs_client

    sqs = sqs_client()
    for i in range(3):
        sqs.send_message(QueueUrl=settings.OUTBOX_QUEUE_URL, MessageBody=f"m{i}")
    sqs.send_message(
        QueueUrl=settings.SYNC_QUEUE_URL,
        MessageBody="x",
        MessageGroupId="g",
        MessageDeduplicationId="d1",
    )
    depths = {q.name: q for q in dashboard.queue_depths_get()}
    assert depths[settings.OUTBOX_QUEUE_NAME].visible == 3
    assert depths[settings.SYNC_QUEUE_NAME].visible == 1
    assert depths[settings.SYNC_DLQ_NAME].visible == 0
    assert depths[settings.OUTBOX_DLQ_NAME].available
    assert depths[settings.RECONCILE_QUEUE_NAME].visible == 0
    assert depths[settings.RECONCILE_DLQ_NAME].available


def test_queue_depths_unavailable_when_sqs_is_down():
    from tests.plugins.aws import free_port

    with override_settings(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"):
        started = time.monotonic()
        depths = dashboard.queue_depths_get()
        elapsed = time.monotonic() - started
    assert len(depths) == 6
    assert not any(q.available for q in depths)
    assert all("unreachable" in q.error for q in depths)
    assert elapsed < 15  # one endpoint failure, not one per queue


def test_checkpoints():
    now = timezone.now()
    ShardCheckpoint.objects.create(
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/chef/stream/2024",
        shard_id="shardId-1",
        sequence_number="4200",
        records_total=42,
        last_batch_size=7,
        last_batch_at=now,
    )
    (row,) = dashboard.checkpoints_get()
    assert (row.table, row.shard_id, row.sequence_number, row.records_total) == (
        "chef",
        "shardId-1",
        "4200",
        42,
    )


# --- the admin page -------------------------------------------------------------------------


def test_dashboard_page_for_staff(client, aws):
    staff = UserFactory(username="ops", is_staff=True, is_superuser=True)
    client.force_login(staff)
    applied(lag=2.5, key="a")
    applied(lag=0.5, key="b")
    ShardCheckpoint.objects.create(
        stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/chef/stream/x",
        shard_id="shardId-xyz",
        sequence_number="900",
        last_batch_at=timezone.now(),
    )
    index = client.get("/admin/")
    assert 'href="/admin/sync/"' in index.content.decode()
    r = client.get("/admin/sync/")
    assert r.status_code == 200
    html = r.content.decode()
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="sync-chart"' in html
    assert 'id="card-applied"><div class="figure" data-value="2"' in html
    assert "2.500 s" in html  # p99 of two samples is the larger
    assert "shardId-xyz" in html and "900" in html
    assert "/admin/syncer/failedchange/?status__exact=failed" in html
    assert "/admin/syncer/conflict/?resolved__exact=0" in html
    assert html.count('class="queue-row"') == 6 and 'class="unavailable"' not in html


def test_dashboard_is_staff_only(client):
    r = client.get("/admin/sync/")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]
    client.force_login(UserFactory(username="plain", is_staff=False))
    r = client.get("/admin/sync/")
    assert r.status_code == 302 and "/admin/login/" in r["Location"]


# --- issue 16: one Sync section, a readable chart, seconds under a minute ---------------------


def test_admin_index_has_one_sync_section_with_the_dashboard_first(client):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    html = client.get("/admin/").content.decode()
    assert len(re.findall(r'<caption>\s*<a [^>]*class="section"[^>]*>Sync</a>', html)) == 1
    section = re.search(r'<div class="app-syncer module.*?</table>', html, re.S).group(0)
    rows = re.findall(r'<th scope="row" id="syncer-(\w+)">', section)
    assert rows[0] == "syncdashboard" and len(rows) > 1
    assert 'href="/admin/sync/"' in section


def test_chart_has_ticks_on_both_value_axes_and_the_time_axis():
    now = timezone.now().replace(minute=37, second=30, microsecond=0)
    for i in range(3):
        applied(lag=1.5, ago=60 * i, key=f"t{i}", now=now)
    applied(lag=0.2, ago=60 * 20, key="u", now=now)
    svg = str(chart_svg(dashboard.minutes_get(now=now)))
    counts = re.findall(r'class="tick tick-count"[^>]*>([^<]+)<', svg)
    lags = re.findall(r'class="tick tick-lag"[^>]*>([^<]+)<', svg)
    times = re.findall(r'class="tick tick-time"[^>]*>([^<]+)<', svg)
    assert counts == ["0", "1", "2", "3", "4", "5"]  # whole changes, from 0 up
    assert lags == ["0", "0.5", "1", "1.5", "2"]
    # A tick every ten minutes of the hour shown: xx:40, xx:50, yy:00, ... yy:30.
    assert len(times) == 6 and all(t.endswith("0") for t in times)
    assert {"changes/min", "lag (s)", "time (UTC)"} <= set(
        re.findall(r'class="title"[^>]*>([^<]+)<', svg)
    )
    # It scales to its panel instead of keeping a fixed pixel width.
    assert 'width="100%"' in svg and 'height="' not in svg.split(">", 1)[0]


@pytest.mark.parametrize(
    "seconds,text",
    [
        (0, "0 seconds"),
        (1, "1 second"),
        (42, "42 seconds"),
        (59.9, "59 seconds"),
        (61, "1\xa0minute"),
    ],
)
def test_age_text_shows_seconds_under_a_minute(seconds, text):
    now = timezone.now()
    assert dashboard.age_text(since=now - timedelta(seconds=seconds), now=now) == text


def test_since_the_last_apply_card_shows_seconds(client, aws):
    client.force_login(UserFactory(username="ops", is_staff=True, is_superuser=True))
    applied(lag=0.1, ago=12)
    html = client.get("/admin/sync/").content.decode()
    card = re.search(r'id="card-last-apply"><div class="figure">([^<]+)<', html).group(1)
    assert re.fullmatch(r"1[2-9] seconds", card), card
