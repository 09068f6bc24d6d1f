"""Which queue each task goes to (config/settings/base.py CELERY_TASK_ROUTES)."""

from __future__ import annotations

import pytest
from django.conf import settings

from config.celery import app
from syncer.ops import CLOUDWATCH_PUBLISH_TASK_NAME
from syncer.outbox import PUBLISH_TASK_NAME, SWEEP_TASK_NAME
from syncer.pipeline import PRUNE_TASK_NAME
from syncer.pipeline.stream.contract import APPLY_TASK_NAME
from syncer.reconcile import COMPARE_TASK_NAME, REPAIR_TASK_NAME, SCAN_TASK_NAME


@pytest.mark.parametrize(
    ("task_name", "queue_setting"),
    [
        (APPLY_TASK_NAME, "SYNC_QUEUE_NAME"),
        (SCAN_TASK_NAME, "RECONCILE_QUEUE_NAME"),
        (COMPARE_TASK_NAME, "RECONCILE_QUEUE_NAME"),
        (REPAIR_TASK_NAME, "RECONCILE_QUEUE_NAME"),
        (PUBLISH_TASK_NAME, "OUTBOX_QUEUE_NAME"),
        (SWEEP_TASK_NAME, "OUTBOX_QUEUE_NAME"),
        (PRUNE_TASK_NAME, "OUTBOX_QUEUE_NAME"),
        (CLOUDWATCH_PUBLISH_TASK_NAME, "OUTBOX_QUEUE_NAME"),
    ],
)
def test_each_task_goes_to_its_queue(task_name, queue_setting):
    options = app.amqp.router.route({}, task_name)
    assert options["queue"].name == getattr(settings, queue_setting)
