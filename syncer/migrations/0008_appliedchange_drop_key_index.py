"""Issue 17: the applied-change log loses its (mapping, key) index.

It cost a random secondary-index insert per applied change on the worker's hot path, and
no reader needs it (see AppliedChange.applied_at). Rows are not touched, so the data in the
table stays as it is: DROP INDEX is an in-place, metadata-only change on MySQL 8.0 and
MariaDB alike (no table copy, however large the log has grown). Reversible: the reverse
builds the index again."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("syncer", "0007_backfill_counts"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="appliedchange",
            name="syncer_appl_mapping_a07bd7_idx",
        ),
    ]
