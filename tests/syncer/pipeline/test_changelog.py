"""The applied-change log: one row per change the apply processed, exactly as processed,
kept for SYNC_CHANGELOG_RETENTION_HOURS, then pruned."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from syncer.models import AppliedChange
from syncer.pipeline.apply import changes_apply
from syncer.pipeline.changelog import changelog_prune
from syncer.pipeline.tasks import changelog_prune as prune_task
from tests.syncer.conftest import gadget_change

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


def test_each_change_is_logged_with_its_own_values(gadget_mapping):
    # The parts a batch's rows share (event, outcome, stream time) are escaped once per batch:
    # every row must still carry its own, whichever combination comes first.
    changes_apply(changes=[gadget_change("b", "INSERT", 1)])
    t1, t2 = 1_700_000_000.25, 1_700_000_100.5
    batch = [
        gadget_change("a'1", "INSERT", 10, ts=t1, event_id="e1"),
        gadget_change("b", "MODIFY", 20, ts=t2, event_id="e2"),
        gadget_change("a'1", "MODIFY", 5, ts=t1, event_id="e3"),  # older: stale
        gadget_change("b", "REMOVE", 30, ts=t1, event_id="e4"),
        gadget_change("c", "INSERT", 99 * 10**30, ts=t2, event_id="e5"),
    ]
    batch[4].pop("ts")  # no stream time
    changes_apply(changes=batch)
    logged = {
        r.event_id: (r.key, r.event_name, int(r.sequence), r.outcome, r.source_time)
        for r in AppliedChange.objects.exclude(sequence=1)
    }

    def at(ts):
        return datetime.fromtimestamp(ts, tz=UTC)

    assert logged == {
        "e1": ("a'1", "INSERT", 10, "applied", at(t1)),
        "e2": ("b", "MODIFY", 20, "stale", at(t2)),  # the batch's newest for b is e4
        "e3": ("a'1", "MODIFY", 5, "stale", at(t1)),
        "e4": ("b", "REMOVE", 30, "applied", at(t1)),
        "e5": ("c", "INSERT", 99 * 10**30, "applied", None),
    }
    assert len({r.applied_at for r in AppliedChange.objects.exclude(sequence=1)}) == 1
