"""The applied-change log: one row per batch the apply processed, holding each of its
changes exactly as processed, kept for SYNC_CHANGELOG_RETENTION_HOURS, then pruned."""

import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from syncer.models import AppliedBatch, uncompress_json
from syncer.pipeline.apply import changes_apply
from syncer.pipeline.changelog import changelog_fields, changelog_prune
from syncer.pipeline.tasks import changelog_prune as prune_task
from tests.factories import AppliedBatchFactory
from tests.syncer.conftest import gadget_change

pytestmark = pytest.mark.django_db


def log_rows(*ages_hours: float) -> None:
    now = timezone.now()
    for i, age in enumerate(ages_hours):
        AppliedBatchFactory(mapping=f"m{i}", applied_at=now - timedelta(hours=age))


def test_rows_past_the_retention_are_deleted_in_chunks():
    log_rows(1, 47, 49, 50, 100, 1000, 2000)
    assert changelog_prune(retention=timedelta(hours=48), chunk_size=2) == 5
    assert sorted(AppliedBatch.objects.values_list("mapping", flat=True)) == ["m0", "m1"]
    assert changelog_prune(retention=timedelta(hours=48)) == 0


def test_the_beat_task_uses_the_setting(settings):
    settings.SYNC_CHANGELOG_RETENTION_HOURS = 2
    log_rows(1, 3)
    assert prune_task() == 1
    assert list(AppliedBatch.objects.values_list("mapping", flat=True)) == ["m0"]


def test_it_is_scheduled():
    schedule = settings.CELERY_BEAT_SCHEDULE["changelog-prune"]
    assert schedule["task"] == prune_task.name == "syncer.changelog_prune"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        changelog_prune(retention=timedelta(0))
    with pytest.raises(ValueError):
        changelog_prune(chunk_size=0)


def test_each_change_is_logged_with_its_own_values(gadget_mapping):
    """Every change of a batch keeps its own event id, key, sequence number (whole, beyond
    2**64), event, outcome and lag; quotes and non-ASCII survive the hand-built INSERT."""
    changes_apply(changes=[gadget_change("b", "INSERT", 1)])
    t1, t2 = 1_700_000_000.25, 1_700_000_100.5
    batch = [
        gadget_change("a'1", "INSERT", 10, ts=t1, event_id="e1"),
        gadget_change("b", "MODIFY", 20, ts=t2, event_id="e2"),
        gadget_change("a'1", "MODIFY", 5, ts=t1, event_id="e3"),  # older: stale
        gadget_change("b", "REMOVE", 30, ts=t1, event_id="e4"),
        gadget_change('c\\é"', "INSERT", 99 * 10**30, ts=t2, event_id="e5"),
    ]
    batch[4].pop("ts")  # no stream time
    changes_apply(changes=batch)
    log = AppliedBatch.objects.order_by("id").last()
    lag = {e["event_id"]: e["lag"] for e in log.entry_dicts()}
    logged = {
        e["event_id"]: (e["key"], e["event"], int(e["sequence"]), e["outcome"])
        for e in log.entry_dicts()
    }
    assert logged == {
        "e1": ("a'1", "INSERT", 10, "applied"),
        "e2": ("b", "MODIFY", 20, "stale"),  # the batch's newest for b is e4
        "e3": ("a'1", "MODIFY", 5, "stale"),
        "e4": ("b", "REMOVE", 30, "applied"),
        "e5": ('c\\é"', "INSERT", 99 * 10**30, "applied"),
    }
    expected = (log.applied_at.timestamp() - t1, log.applied_at.timestamp() - t2)
    assert lag["e1"] == lag["e3"] == lag["e4"] == pytest.approx(expected[0], abs=0.001)
    assert lag["e2"] == pytest.approx(expected[1], abs=0.001) and lag["e5"] is None
    assert (log.applied, log.stale) == (3, 2)
    assert log.lags == {str(round(lag["e1"] * 1000)): 2}  # e1 and e4; stale and timeless: none
    assert log.lag_max == lag["e1"]


def test_fields_summarise_the_entries():
    entries = [
        ["a", "k1", "1", "MODIFY", "applied", 0.25],
        ["b", "k2", "2", "MODIFY", "applied", 0.25],
        ["c", "k3", "3", "INSERT", "applied", 1.5],
        ["d", "k4", "4", "MODIFY", "stale", 9.0],
        ["e", "k5", "5", "REMOVE", "applied", None],
    ]
    assert changelog_fields(entries) == {
        "applied": 4,
        "stale": 1,
        "lag_max": 1.5,
        "lags": {"250": 2, "1500": 1},
    }
    assert changelog_fields([]) == {"applied": 0, "stale": 0, "lag_max": None, "lags": {}}


def test_a_batch_is_stored_compressed_and_reads_back_whole(gadget_mapping):
    """The apply writes `entries` in MySQL's COMPRESS() format (a hex literal in its
    hand-built INSERT): SQL's UNCOMPRESS() gives the JSON text, the model the entries."""
    batch = [
        gadget_change(f"k{i}-é'\"", "INSERT", 10**39 + i, event_id=f"ev-{i}") for i in range(100)
    ]
    changes_apply(changes=batch)
    log = AppliedBatch.objects.get()
    assert [e[:5] for e in log.entries] == [
        [f"ev-{i}", f"k{i}-é'\"", str(10**39 + i), "INSERT", "applied"] for i in range(100)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT entries, CONVERT(UNCOMPRESS(entries) USING utf8mb4)"
            " FROM syncer_appliedbatch WHERE id = %s",
            [log.pk],
        )
        stored, text = cursor.fetchone()
    assert json.loads(text) == log.entries
    assert uncompress_json(stored) == log.entries
    assert len(stored) < len(text) / 2
