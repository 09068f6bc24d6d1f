from django.db import migrations

from syncer.outbox.capture import CaptureTriggers
from tests.testapp.mapping import GADGET_MAPPING


class Migration(migrations.Migration):
    dependencies = [
        ("testapp", "0001_initial"),
        ("syncer", "0005_reconcile_speed"),
    ]

    # The mapping itself: tests register it only while they use it.
    operations = [CaptureTriggers(mapping=GADGET_MAPPING)]
