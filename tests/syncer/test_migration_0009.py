"""syncer/0009: the per-change log rows (AppliedChange) become one row per batch
(AppliedBatch), grouped by (mapping, applied_at), and come back when migrated backwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from syncer.pipeline.changelog import changelog_fields
from tests.migrating import migrate, state_apps

BEFORE = [("syncer", "0008_appliedchange_drop_key_index"), ("chefs", "0005_capture_triggers")]

T1 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 12, 0, 5, 0, tzinfo=UTC)
SEQ40 = "1" + "2345678901" * 3 + "987654321"  # 40 digits
ODD_KEY = 'O\'Brien "é" ü-ß 寿司'

# (mapping, applied_at, key, event_id, event, sequence, outcome, lag before applied_at or None)
CHANGES = [
    ("chef", T1, "k-a", "ev-a", "INSERT", "101", "applied", timedelta(milliseconds=1500)),
    ("chef", T1, ODD_KEY, "ev-b", "MODIFY", SEQ40, "applied", timedelta(microseconds=123_456)),
    ("chef", T1, "k-c", "ev-c", "MODIFY", "99", "stale", timedelta(seconds=3)),
    ("chef", T2, "k-d", "ev-d", "REMOVE", "102", "applied", None),
    ("chef", T2, "k-e", "ev-e", "MODIFY", "103", "applied", timedelta(milliseconds=20)),
    ("gadget", T1, "k-f", "ev-f", "INSERT", "7", "applied", timedelta(milliseconds=2)),
    ("chef", T1, "k-g", "ev-g", "MODIFY", "104", "applied", timedelta(milliseconds=700)),
]


def _operator_log_perms(apps) -> set[str]:
    group = apps.get_model("auth", "Group").objects.get(name="sync operators")
    return set(
        group.permissions.filter(codename__startswith="view_applied").values_list(
            "codename", flat=True
        )
    )


def _expected_lag(applied_at: datetime, source_time: datetime | None):
    if source_time is None:
        return None
    return round((applied_at - source_time).total_seconds(), 3)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunk", [2_000, 1], ids=["one-chunk", "chunk-of-1"])
def test_0009_groups_changes_into_batches_and_back(chunk, monkeypatch):
    # The migration's module, as the loader imported it: a chunk of 1 writes every batch
    # (and, backwards, every batch's changes) on its own.
    monkeypatch.setattr(import_module("syncer.migrations.0009_appliedbatch"), "CHUNK", chunk)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor = migrate(executor, BEFORE)
        AppliedChange = state_apps(executor, BEFORE).get_model("syncer", "AppliedChange")
        for mapping, applied_at, key, event_id, event, seq, outcome, lag in CHANGES:
            AppliedChange.objects.create(
                mapping=mapping,
                key=key,
                event_id=event_id,
                event_name=event,
                sequence=Decimal(seq),
                outcome=outcome,
                source_time=None if lag is None else applied_at - lag,
                applied_at=applied_at,
            )
        originals = {
            c.event_id: c
            for c in AppliedChange.objects.all()  # as stored (microseconds as MySQL kept them)
        }
        assert len(originals) == len(CHANGES)

        executor = migrate(executor, latest)
        apps = state_apps(executor, latest)
        AppliedBatch = apps.get_model("syncer", "AppliedBatch")
        assert _operator_log_perms(apps) == {"view_appliedbatch"}
        batches = {(b.mapping, b.applied_at): b for b in AppliedBatch.objects.all()}
        assert AppliedBatch.objects.count() == 3
        assert set(batches) == {("chef", T1), ("chef", T2), ("gadget", T1)}

        for (mapping, applied_at), batch in batches.items():
            rows = sorted(
                (
                    c
                    for c in originals.values()
                    if c.mapping == mapping and c.applied_at == applied_at
                ),
                key=lambda c: c.id,
            )
            expected = [
                [
                    c.event_id,
                    c.key,
                    str(c.sequence),
                    c.event_name,
                    c.outcome,
                    _expected_lag(c.applied_at, c.source_time),
                ]
                for c in rows
            ]
            assert batch.entries == expected
            fields = changelog_fields(expected)
            assert (batch.applied, batch.stale, batch.lag_max, batch.lags) == (
                fields["applied"],
                fields["stale"],
                fields["lag_max"],
                fields["lags"],
            )

        chef_t1 = batches["chef", T1]
        assert [e[0] for e in chef_t1.entries] == ["ev-a", "ev-b", "ev-c", "ev-g"]
        assert chef_t1.entries[1][1] == ODD_KEY
        assert chef_t1.entries[1][2] == SEQ40
        assert chef_t1.entries[1][5] == 0.123
        assert (chef_t1.applied, chef_t1.stale, chef_t1.lag_max) == (3, 1, 1.5)
        assert chef_t1.lags == {"1500": 1, "123": 1, "700": 1}
        chef_t2 = batches["chef", T2]
        assert chef_t2.entries[0][5] is None
        assert (chef_t2.applied, chef_t2.stale, chef_t2.lag_max, chef_t2.lags) == (
            2,
            0,
            0.02,
            {"20": 1},
        )

        executor = migrate(executor, BEFORE)
        apps = state_apps(executor, BEFORE)
        AppliedChange = apps.get_model("syncer", "AppliedChange")
        # chefs/0006 reversed: the operators read the per-change log again.
        assert _operator_log_perms(apps) == {"view_appliedchange"}
        back = {c.event_id: c for c in AppliedChange.objects.all()}
        assert set(back) == set(originals)
        for event_id, original in originals.items():
            row = back[event_id]
            assert (row.mapping, row.key, row.event_name, row.outcome, row.applied_at) == (
                original.mapping,
                original.key,
                original.event_name,
                original.outcome,
                original.applied_at,
            )
            assert row.sequence == original.sequence
            assert str(row.sequence) == str(original.sequence)
            if original.source_time is None:
                assert row.source_time is None
            else:
                assert abs(row.source_time - original.source_time) <= timedelta(milliseconds=1)
        assert str(back["ev-b"].sequence) == SEQ40
        assert back["ev-b"].key == ODD_KEY
    finally:
        migrate(MigrationExecutor(connection), latest)
