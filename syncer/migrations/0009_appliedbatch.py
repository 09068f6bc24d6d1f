"""Issue 17: the applied-change log keeps one row per batch (AppliedBatch) instead of one per
change (AppliedChange), which cost an InnoDB row and an index entry per change on the
apply's hot path.

The rows already logged are carried over, grouped into batches by (mapping, applied_at):
the apply gave every change of a batch the same applied_at. Streamed in chunks, so a large
log does not have to fit in memory. Reversible: the reverse splits the batches again."""

from django.db import migrations, models

CHUNK = 2_000


def _entry(change) -> list:
    lag = None
    if change.source_time is not None:
        lag = round((change.applied_at - change.source_time).total_seconds(), 3)
    return [
        change.event_id,
        change.key,
        str(change.sequence),
        change.event_name,
        change.outcome,
        lag,
    ]


def changes_to_batches(apps, schema_editor):
    from syncer.pipeline.changelog import changelog_fields

    AppliedChange = apps.get_model("syncer", "AppliedChange")
    AppliedBatch = apps.get_model("syncer", "AppliedBatch")
    pending: list = []
    current: tuple | None = None
    entries: list = []

    def close() -> None:
        if current is not None and entries:
            pending.append(
                AppliedBatch(
                    mapping=current[0],
                    applied_at=current[1],
                    entries=entries,
                    **changelog_fields(entries),
                )
            )
        if len(pending) >= CHUNK:
            AppliedBatch.objects.bulk_create(pending)
            pending.clear()

    rows = AppliedChange.objects.order_by("applied_at", "mapping", "id").iterator(chunk_size=CHUNK)
    for change in rows:
        group = (change.mapping, change.applied_at)
        if group != current:
            close()
            current, entries = group, []
        entries.append(_entry(change))
    close()
    AppliedBatch.objects.bulk_create(pending)


def batches_to_changes(apps, schema_editor):
    from datetime import timedelta
    from decimal import Decimal

    AppliedChange = apps.get_model("syncer", "AppliedChange")
    AppliedBatch = apps.get_model("syncer", "AppliedBatch")
    pending: list = []
    for batch in AppliedBatch.objects.order_by("id").iterator(chunk_size=CHUNK):
        for event_id, key, sequence, event, outcome, lag in batch.entries:
            source_time = None
            if lag is not None:
                source_time = batch.applied_at - timedelta(seconds=lag)
            pending.append(
                AppliedChange(
                    mapping=batch.mapping,
                    key=key,
                    event_id=event_id,
                    event_name=event,
                    sequence=Decimal(sequence),
                    outcome=outcome,
                    source_time=source_time,
                    applied_at=batch.applied_at,
                )
            )
        if len(pending) >= CHUNK:
            AppliedChange.objects.bulk_create(pending)
            pending.clear()
    AppliedChange.objects.bulk_create(pending)


class Migration(migrations.Migration):
    dependencies = [
        ("syncer", "0008_appliedchange_drop_key_index"),
        # After the roles that named AppliedChange's permission (chefs/0006 moves them on).
        ("chefs", "0005_capture_triggers"),
    ]

    operations = [
        migrations.CreateModel(
            name="AppliedBatch",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("mapping", models.CharField(max_length=64)),
                ("applied_at", models.DateTimeField(db_index=True)),
                ("applied", models.PositiveIntegerField(help_text="Changes applied.")),
                (
                    "stale",
                    models.PositiveIntegerField(help_text="Changes older than what was applied."),
                ),
                (
                    "lag_max",
                    models.FloatField(
                        blank=True, help_text="Largest lag (s) of the applied changes.", null=True
                    ),
                ),
                ("lags", models.JSONField(blank=True, default=dict)),
                ("entries", models.JSONField(blank=True, default=list)),
            ],
            options={
                "verbose_name": "applied batch",
                "verbose_name_plural": "applied batches",
            },
        ),
        migrations.RunPython(changes_to_batches, batches_to_changes),
        migrations.DeleteModel(
            name="AppliedChange",
        ),
    ]
