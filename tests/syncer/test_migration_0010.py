"""syncer/0010: AppliedBatch.entries goes from a JSON column to CompressedJSONField (MySQL's
COMPRESS() format), every row carried over, and back to JSON when migrated backwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import import_module

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from syncer.models import uncompress_json
from syncer.pipeline.changelog import changelog_fields
from tests.migrating import migrate, state_apps

BEFORE = [("syncer", "0009_appliedbatch")]
T1 = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
SEQ40 = "1" + "2345678901" * 3 + "987654321"  # 40 digits
ODD_KEY = 'O\'Brien "é" ü-ß 寿司 \\'

BATCHES = [
    [
        ["ev-a", "k-a", "101", "INSERT", "applied", 1.5],
        ["ev-b", ODD_KEY, SEQ40, "MODIFY", "stale", None],
    ],
    [],
    [[f"ev-{i}", f"k-{i}", str(i), "MODIFY", "applied", i / 1000] for i in range(150)],
    [["ev-c", 'say"hi', "7", "REMOVE", "applied", 0.002]],
]


def _stored() -> dict[int, object]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, entries FROM syncer_appliedbatch")
        return dict(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("chunk", [2_000, 1], ids=["one-chunk", "chunk-of-1"])
def test_0010_compresses_the_entries_and_back(chunk, monkeypatch):
    # The migration's module, as the loader imported it: a chunk of 1 copies row by row.
    module = import_module("syncer.migrations.0010_appliedbatch_compressed_entries")
    monkeypatch.setattr(module, "CHUNK", chunk)
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor = migrate(executor, BEFORE)
        AppliedBatch = state_apps(executor, BEFORE).get_model("syncer", "AppliedBatch")
        ids = [
            AppliedBatch.objects.create(
                mapping="chef", applied_at=T1, entries=entries, **changelog_fields(entries)
            ).pk
            for entries in BATCHES
        ]

        executor = migrate(executor, latest)
        AppliedBatch = state_apps(executor, latest).get_model("syncer", "AppliedBatch")
        assert {b.pk: b.entries for b in AppliedBatch.objects.all()} == dict(
            zip(ids, BATCHES, strict=True)
        )
        stored = _stored()
        for pk, entries in zip(ids, BATCHES, strict=True):
            assert isinstance(stored[pk], bytes)
            assert uncompress_json(stored[pk]) == entries
        assert AppliedBatch.objects.filter(entries__text__icontains="k-149").get().pk == ids[2]
        # The summary columns are untouched.
        assert [b.lags for b in AppliedBatch.objects.order_by("id")] == [
            changelog_fields(entries)["lags"] for entries in BATCHES
        ]

        executor = migrate(executor, BEFORE)
        AppliedBatch = state_apps(executor, BEFORE).get_model("syncer", "AppliedBatch")
        assert {b.pk: b.entries for b in AppliedBatch.objects.all()} == dict(
            zip(ids, BATCHES, strict=True)
        )
        for pk, text in _stored().items():
            assert json.loads(text) == BATCHES[ids.index(pk)]  # JSON text again
        assert AppliedBatch.objects.filter(entries__icontains="k-149").get().pk == ids[2]
    finally:
        migrate(MigrationExecutor(connection), latest)
