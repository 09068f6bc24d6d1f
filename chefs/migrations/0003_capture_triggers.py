"""Triggers that capture every write to cheftable into the outbox, whoever makes it
(syncer/capture.py). Generated from the chef mapping; run again when its fields change."""

from django.db import migrations

from syncer.capture import CaptureTriggers


class Migration(migrations.Migration):
    dependencies = [
        ("chefs", "0002_chef_chef_id"),
        ("syncer", "0005_reconcile_speed"),
    ]

    operations = [CaptureTriggers(mapping="chef")]
