"""Triggers that capture every write to cheftable into the outbox, whoever makes it
(syncer/outbox/capture.py). Generated from the chef mapping; run again when its fields change."""

from django.db import migrations

from syncer.outbox.capture import CaptureTriggers


class Migration(migrations.Migration):
    dependencies = [
        ("chefs", "0004_roles"),
        ("syncer", "0007_backfill_counts"),
    ]

    operations = [CaptureTriggers(mapping="chef")]
