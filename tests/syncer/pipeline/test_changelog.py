"""The applied-change log is kept for SYNC_CHANGELOG_RETENTION_HOURS, then pruned."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from syncer.models import AppliedChange
from syncer.pipeline.changelog import changelog_prune
from syncer.pipeline.tasks import changelog_prune as prune_task

pytestmark = pytest.mark.django_db


def log_rows(*ages_hours: float) -> None:
    now = timezone.now()
    AppliedChange.objects.bulk_create(
        AppliedChange(
            mapping="chef",
            key=f"k{i}",
            event_id=f"ev-{i}",
            event_name="MODIFY",
            sequence=i + 1,
            outcome="applied",
            applied_at=now - timedelta(hours=age),
        )
        for i, age in enumerate(ages_hours)
    )


def test_rows_past_the_retention_are_deleted_in_chunks():
    log_rows(1, 47, 49, 50, 100, 1000, 2000)
    assert changelog_prune(retention=timedelta(hours=48), chunk_size=2) == 5
    assert sorted(AppliedChange.objects.values_list("key", flat=True)) == ["k0", "k1"]
    assert changelog_prune(retention=timedelta(hours=48)) == 0


def test_the_beat_task_uses_the_setting(settings):
    settings.SYNC_CHANGELOG_RETENTION_HOURS = 2
    log_rows(1, 3)
    assert prune_task() == 1
    assert list(AppliedChange.objects.values_list("key", flat=True)) == ["k0"]


def test_it_is_scheduled():
    schedule = settings.CELERY_BEAT_SCHEDULE["changelog-prune"]
    assert schedule["task"] == prune_task.name == "syncer.changelog_prune"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        changelog_prune(retention=timedelta(0))
    with pytest.raises(ValueError):
        changelog_prune(chunk_size=0)
