"""The change message: what the stream handler sends and the apply task receives.

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

from typing import Any, TypedDict

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
