"""Builders of AWS-shaped DynamoDB stream events (as Lambda delivers them), and a reader
that takes Celery task messages off an SQS queue and decodes kombu's envelope."""

from __future__ import annotations

import base64
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

REGION = "us-east-1"
ACCOUNT = "123456789012"
STREAM_LABEL = "2026-01-01T00:00:00.000"

_seq = itertools.count(100_000_000_000_000_000_000)


def stream_arn(table: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}/stream/{STREAM_LABEL}"


def next_seq() -> str:
    """Stream sequence numbers: decimal strings of 21+ digits, increasing."""
    return str(next(_seq))


def stream_record(
    event_name: str,
    keys: dict[str, Any],
    *,
    new_image: dict[str, Any] | None = None,
    old_image: dict[str, Any] | None = None,
    table: str = "chef",
    seq: str | None = None,
    event_id: str | None = None,
    ts: float | None = None,
    view_type: str = "NEW_AND_OLD_IMAGES",
) -> dict[str, Any]:
    """One record of a Lambda DynamoDB stream event."""
    ddb: dict[str, Any] = {
        "ApproximateCreationDateTime": ts if ts is not None else round(time.time(), 3),
        "Keys": keys,
        "SequenceNumber": seq or next_seq(),
        "SizeBytes": 0,
        "StreamViewType": view_type,
    }
    if new_image is not None:
        ddb["NewImage"] = new_image
    if old_image is not None:
        ddb["OldImage"] = old_image
    ddb["SizeBytes"] = len(json.dumps([keys, new_image, old_image]))
    return {
        "eventID": event_id or uuid.uuid4().hex,
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "eventSourceARN": stream_arn(table),
        "dynamodb": ddb,
    }


def chef_keys(chef_id: str) -> dict[str, Any]:
    return {"ChefId": {"S": chef_id}}


def chef_image(chef_id: str, first: str, last: str, **extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "ChefId": {"S": chef_id},
        "firstName": {"S": first},
        "lastName": {"S": last},
        **extra,
    }


def insert(chef_id: str, first: str = "Alton", last: str = "Brown", **kw) -> dict[str, Any]:
    return stream_record(
        "INSERT", chef_keys(chef_id), new_image=chef_image(chef_id, first, last), **kw
    )


def modify(
    chef_id: str, first: str = "Alton", last: str = "Brown", *, old_first: str = "Al", **kw
) -> dict[str, Any]:
    return stream_record(
        "MODIFY",
        chef_keys(chef_id),
        new_image=chef_image(chef_id, first, last),
        old_image=chef_image(chef_id, old_first, last),
        **kw,
    )


def remove(chef_id: str, first: str = "Alton", last: str = "Brown", **kw) -> dict[str, Any]:
    return stream_record(
        "REMOVE", chef_keys(chef_id), old_image=chef_image(chef_id, first, last), **kw
    )


def stream_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


# --- reading what landed in SQS --------------------------------------------------------
@dataclass
class TaskMessage:
    task: str
    group_id: str
    dedup_id: str
    changes: list[dict[str, Any]]
    body_bytes: int  # size of the SQS message body


def decode_task_message(sqs_message: dict[str, Any]) -> TaskMessage:
    """kombu's SQS transport: base64(JSON envelope); the envelope's body is the Celery
    (protocol 2) body `[args, kwargs, embed]`, itself base64 when body_encoding says so."""
    raw = sqs_message["Body"]
    envelope = json.loads(base64.b64decode(raw))
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = json.loads(body)
    assert not kwargs, kwargs
    (changes,) = args
    attrs = sqs_message.get("Attributes", {})
    return TaskMessage(
        task=envelope["headers"]["task"],
        group_id=attrs["MessageGroupId"],
        dedup_id=attrs["MessageDeduplicationId"],
        changes=changes,
        body_bytes=len(raw.encode()),
    )


def drain_queue(sqs, queue_url: str, *, wait_seconds: float = 0.0) -> list[TaskMessage]:
    """Receive and delete every message now in the queue, in receive order.

    With `wait_seconds`, keep polling until that long has passed with nothing new (for
    messages still on their way); otherwise stop at the first empty receive.
    """
    messages: list[TaskMessage] = []
    idle_deadline = time.monotonic() + wait_seconds
    while True:
        resp = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        batch = resp.get("Messages", [])
        if not batch:
            if time.monotonic() >= idle_deadline:
                return messages
            time.sleep(0.05)
            continue
        for m in batch:
            messages.append(decode_task_message(m))
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)
            ],
        )
        idle_deadline = time.monotonic() + wait_seconds


def all_changes(messages: list[TaskMessage]) -> list[dict[str, Any]]:
    return [c for m in messages for c in m.changes]
