"""CompressedJSONField's format is MySQL's COMPRESS(): what Python writes, SQL's
UNCOMPRESS() reads, and what SQL's COMPRESS() writes, Python reads, on the real server;
binary values reach the server whole through the hand-built statements (SqlValues)."""

from __future__ import annotations

import json

import pytest
from django.core import serializers
from django.db import connection
from django.utils import timezone

from syncer.models import AppliedBatch, compress_json, uncompress_json
from syncer.store.sql import SqlValues

pytestmark = pytest.mark.django_db

VALUES = [
    [],
    {},
    [["ev-1", "k", "1", "INSERT", "applied", 0.25]],
    [["ev-2", 'O\'Brien "é" ü-ß 寿司 \\', "9" * 40, "MODIFY", "stale", None]],
    [[f"ev-{i}", f"key-{i}", str(10**39 + i), "MODIFY", "applied", i / 1000] for i in range(100)],
]


def one(sql: str, params: list) -> object:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


@pytest.mark.parametrize("value", VALUES)
def test_sql_uncompresses_what_python_compressed(value):
    data = compress_json(value)
    text = one("SELECT CONVERT(UNCOMPRESS(%s) USING utf8mb4)", [data])
    assert text == json.dumps(value, separators=(",", ":"))
    assert json.loads(text) == value == uncompress_json(data) == uncompress_json(memoryview(data))


@pytest.mark.parametrize("value", VALUES)
def test_python_uncompresses_what_sql_compressed(value):
    text = json.dumps(value, ensure_ascii=False)  # as MySQL 8 prints JSON: plain UTF-8
    assert uncompress_json(one("SELECT COMPRESS(%s)", [text])) == value


def test_any_compress_output_is_read():
    # MySQL's COMPRESS() appends a '.' when the stream ends with a space: read past it.
    for i in range(300):
        value = [f"{i}-" + " " * (i % 7), i]
        assert uncompress_json(one("SELECT COMPRESS(%s)", [json.dumps(value)])) == value


def test_an_empty_compress_value_is_no_json():
    assert one("SELECT COMPRESS('')", []) == b""
    with pytest.raises(ValueError):
        uncompress_json(b"")


@pytest.mark.parametrize("value", VALUES)
def test_plain_json_text_is_read_too(value):
    # A worker on the code before migration 0010 writes plain JSON into the renamed column
    # during a rolling deploy; its rows stay readable (an event id may start with "x").
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        assert uncompress_json(text.encode()) == value
    assert uncompress_json(b'[["xyz",1]]') == [["xyz", 1]]


def test_neither_format_is_an_error():
    for data in (b"\x05\x00\x00\x00xjunk", b"[not json", b"\xff" * 9):
        with pytest.raises(ValueError, match="neither COMPRESS"):
            uncompress_json(data)


def test_an_old_workers_plain_row_reads_back():
    now = timezone.now()
    entries = [["ev-old", "k", "1", "INSERT", "applied", 0.5]]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO syncer_appliedbatch (mapping, applied_at, applied, stale, lags, entries)"
            " VALUES ('chef', %s, 1, 0, '{}', %s)",
            [now, json.dumps(entries)],
        )
    assert AppliedBatch.objects.get().entries == entries


def test_bytes_that_are_not_utf8_reach_the_server_whole():
    raw = bytes(range(256)) + b"'\\\x00\x80\xff"
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    values = SqlValues()
    assert one(f"SELECT {values.text([raw])}", []) == raw
    assert one(f"SELECT HEX({values.text([b''])})", []) == ""


def test_the_field_round_trips_through_the_orm():
    entries = VALUES[3] + VALUES[4]
    batch = AppliedBatch.objects.create(
        mapping="m", applied_at=timezone.now(), applied=0, stale=0, entries=entries
    )
    batch.refresh_from_db()
    assert batch.entries == entries
    # values() and values_list() read the field's value, not its bytes.
    assert AppliedBatch.objects.values_list("entries", flat=True).get() == entries
    assert AppliedBatch.objects.values("entries").get() == {"entries": entries}
    assert AppliedBatch.objects.filter(entries__text__icontains="O'BRIEN").get() == batch
    stored = one("SELECT entries FROM syncer_appliedbatch WHERE id = %s", [batch.pk])
    assert isinstance(stored, bytes) and uncompress_json(stored) == entries
    assert len(stored) < len(json.dumps(entries, separators=(",", ":"))) / 2


def test_a_default_batch_holds_no_entries():
    batch = AppliedBatch.objects.create(mapping="m", applied_at=timezone.now(), applied=0, stale=0)
    batch.refresh_from_db()
    assert batch.entries == [] and batch.entry_dicts() == []


def test_the_field_serializes_as_json_text():
    entries = VALUES[3]
    batch = AppliedBatch.objects.create(
        mapping="m", applied_at=timezone.now(), applied=0, stale=1, entries=entries
    )
    data = serializers.serialize("json", AppliedBatch.objects.all())
    assert json.loads(data)[0]["fields"]["entries"] == json.dumps(entries, separators=(",", ":"))
    AppliedBatch.objects.all().delete()
    for obj in serializers.deserialize("json", data):
        obj.save()
    assert AppliedBatch.objects.get(pk=batch.pk).entries == entries
