"""The change message: what the stream handler sends and the apply task receives, and the
conversion of a Lambda-shaped stream record into one (`change_from_record`).

Standard library only: the Lambda ships this module with the handler, and it is the one
module of the Lambda package that Django code imports (the failed-change replay converts a
kept stream record with it).

One change per stream record, JSON primitives only (Celery messages are JSON):

    {
      "id":    eventID of the stream record (unique; used for dedup and failed changes),
      "table": DynamoDB table name (taken from eventSourceARN),
      "event": "INSERT" | "MODIFY" | "REMOVE",
      "seq":   dynamodb.SequenceNumber, a decimal string (compare as integers),
      "keys":  dynamodb.Keys, DynamoDB JSON ({"ChefId": {"S": "Brown#Alton"}}),
      "image": dynamodb.NewImage, DynamoDB JSON; null for REMOVE,
      "ts":    dynamodb.ApproximateCreationDateTime, epoch seconds (float),
      "fetch": optional, true when the image was too large to carry: the worker reads the
               current item from DynamoDB instead (it is at least as new as the record)
    }

The apply task is `syncer.apply_changes(changes: list[dict])` on the SYNC queue (FIFO).
"""

from datetime import datetime
from typing import Any, TypedDict
from urllib.parse import quote, urlsplit

APPLY_TASK_NAME = "syncer.apply_changes"
EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")


class Change(TypedDict, total=False):
    id: str
    table: str
    event: str
    seq: str
    keys: dict[str, Any]
    image: dict[str, Any] | None
    ts: float
    fetch: bool


def broker_url(
    *, endpoint_url: str | None, access_key_id: str | None, secret_access_key: str | None
) -> str:
    """The Celery broker URL of the SQS transport, for the stream handler and the project's
    own Celery app (settings) alike."""
    if not endpoint_url:
        return "sqs://"  # AWS: credentials from the role / default chain
    # kombu reaches a local endpoint only when its host is in the broker URL.
    hostport = urlsplit(endpoint_url).netloc
    key = quote(access_key_id or "testing", safe="")
    secret = quote(secret_access_key or "testing", safe="")
    return f"sqs://{key}:{secret}@{hostport}"


SEQUENCE_MAX_DIGITS = 40  # the sequence columns' precision (syncer.models.SEQUENCE_DIGITS)


def sequence_valid(value: Any) -> bool:
    """A stream sequence number as changes carry it: a decimal string of ASCII digits (compared
    as an integer), at most SEQUENCE_MAX_DIGITS long. The one rule of the handler and the
    apply."""
    # ASCII only: "²".isdigit() is True.
    return (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and len(value) <= SEQUENCE_MAX_DIGITS
    )


class RecordError(ValueError):
    """A stream record that cannot be turned into a change."""


# --- records -> changes (the stream handler, and the replay of a failed stream record) ---
def table_from_stream_arn(arn: Any) -> str:
    """The table name of a DynamoDB stream ARN; raises RecordError for anything else.

    arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>"""
    if not isinstance(arn, str):
        raise RecordError("eventSourceARN is missing")
    parts = arn.split(":", 5)
    resource = parts[5].split("/") if len(parts) == 6 else []
    if len(resource) < 2 or resource[0] != "table" or not resource[1]:
        raise RecordError(f"eventSourceARN is not a DynamoDB table stream ARN: {arn!r}")
    return resource[1]


def _epoch_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"ApproximateCreationDateTime is not a number: {value!r}") from exc


def change_from_record(record: dict[str, Any]) -> Change:
    """One Lambda-shaped DynamoDB stream record -> a change; raises RecordError."""
    if not isinstance(record, dict):
        raise RecordError("record is not an object")
    event_id = record.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise RecordError("eventID is missing")
    event = record.get("eventName")
    if event not in EVENT_NAMES:
        raise RecordError(f"unknown eventName {event!r}")
    table = table_from_stream_arn(record.get("eventSourceARN"))
    ddb = record.get("dynamodb")
    if not isinstance(ddb, dict):
        raise RecordError("dynamodb is missing")
    seq = ddb.get("SequenceNumber")
    if not sequence_valid(seq):
        raise RecordError(f"SequenceNumber is missing or not a decimal string: {seq!r}")
    keys = ddb.get("Keys")
    if not isinstance(keys, dict) or not keys:
        raise RecordError("Keys are missing")
    change: Change = {
        "id": event_id,
        "table": table,
        "event": event,
        "seq": seq,
        "keys": keys,
        "image": None,
        "ts": _epoch_seconds(ddb.get("ApproximateCreationDateTime")),
    }
    if event != "REMOVE":
        image = ddb.get("NewImage")
        if isinstance(image, dict):
            change["image"] = image
        else:
            # A stream without new images (KEYS_ONLY / OLD_IMAGE): the worker reads the item.
            change["fetch"] = True
    return change
