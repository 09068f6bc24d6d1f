"""AppliedBatch.entries stored compressed (CompressedJSONField: MySQL's COMPRESS() format,
compressed by the client) instead of as a JSON column: at ~100 changes a batch the JSON was
off-page text and a JSON check on the apply's hot path.

The rows already logged are carried over into a new column, in chunks by id, compressed in
Python; the JSON column goes and the new one takes its name. Reversible: the reverse writes
the JSON text back."""

import json

from django.db import migrations

import syncer.models

CHUNK = 2_000


def _copy(apps, schema_editor, *, source: str, target: str, encode) -> None:
    """Each row's `source` value written to `target` (as `encode` gives it), CHUNK rows at
    a time in id order."""
    AppliedBatch = apps.get_model("syncer", "AppliedBatch")
    ops = schema_editor.connection.ops
    update = "UPDATE {} SET {} = %s WHERE {} = %s".format(
        ops.quote_name(AppliedBatch._meta.db_table), ops.quote_name(target), ops.quote_name("id")
    )
    last = 0
    while True:
        rows = list(
            AppliedBatch.objects.filter(id__gt=last)
            .order_by("id")
            .values_list("id", source)[:CHUNK]
        )
        if not rows:
            return
        with schema_editor.connection.cursor() as cursor:
            cursor.executemany(update, [(encode(value), pk) for pk, value in rows])
        last = rows[-1][0]


def json_to_compressed(apps, schema_editor):
    _copy(
        apps,
        schema_editor,
        source="entries",
        target="entries_compressed",
        encode=syncer.models.compress_json,
    )


def compressed_to_json(apps, schema_editor):
    _copy(
        apps,
        schema_editor,
        source="entries_compressed",
        target="entries",
        encode=lambda value: json.dumps(value, separators=(",", ":")),
    )


class Migration(migrations.Migration):
    dependencies = [("syncer", "0009_appliedbatch")]

    operations = [
        migrations.AddField(
            model_name="appliedbatch",
            name="entries_compressed",
            field=syncer.models.CompressedJSONField(blank=True, null=True),
        ),
        migrations.RunPython(json_to_compressed, compressed_to_json),
        migrations.RemoveField(model_name="appliedbatch", name="entries"),
        migrations.RenameField(
            model_name="appliedbatch", old_name="entries_compressed", new_name="entries"
        ),
        migrations.AlterField(
            model_name="appliedbatch",
            name="entries",
            field=syncer.models.CompressedJSONField(blank=True, default=list),
        ),
    ]
