"""The apply task as the worker runs it: retries keep their FIFO group (on moto's SQS)."""

from __future__ import annotations

import base64
import json

from django.conf import settings

from syncer.aws import sqs_client
from syncer.pipeline.apply import TransientApplyError


def _retry_as_the_worker_would(*, group: str, dedup: str, retries: int) -> None:
    from syncer.pipeline.tasks import apply_changes

    assert apply_changes.app.main == "backsync"  # the worker's app, not the handler's
    queue = settings.SYNC_QUEUE_NAME
    apply_changes.push_request(
        id="task-1",
        args=[[{"id": "ev-1"}]],
        kwargs={},
        retries=retries,
        called_directly=False,
        is_eager=False,
        # What kombu's SQS transport hands the worker: the message's own properties.
        properties={"MessageGroupId": group, "MessageDeduplicationId": dedup},
        delivery_info={"exchange": queue, "routing_key": queue},
    )
    try:
        apply_changes.retry(exc=TransientApplyError("deadlock"), countdown=0, throw=False)
    finally:
        apply_changes.pop_request()


def test_a_retried_apply_goes_back_into_its_own_fifo_group(aws):
    _retry_as_the_worker_would(group="chef-3", dedup="d" * 64, retries=0)
    _retry_as_the_worker_would(group="chef-1", dedup="e" * 64, retries=2)

    received = sqs_client().receive_message(
        QueueUrl=settings.SYNC_QUEUE_URL,
        MaxNumberOfMessages=10,
        MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
    )["Messages"]
    attrs = sorted(
        (m["Attributes"]["MessageGroupId"], m["Attributes"]["MessageDeduplicationId"])
        for m in received
    )
    # Not group "default"; a new deduplication id per attempt (the original's would be
    # dropped by SQS as a duplicate).
    assert attrs == [("chef-1", "e" * 64 + ":retry-3"), ("chef-3", "d" * 64 + ":retry-1")]
    bodies = [json.loads(base64.b64decode(m["Body"])) for m in received]
    assert all(b["headers"]["task"] == "syncer.apply_changes" for b in bodies)
