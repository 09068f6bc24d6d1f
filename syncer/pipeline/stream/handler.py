"""DynamoDB stream -> SQS FIFO (Celery messages): the Lambda entry point `handler(event, context)`.

Imports no Django: in AWS this module runs alone in a Lambda; locally `manage.py relay_stream`
calls the same `handler`. Configuration comes from the environment only:

- `SYNC_QUEUE_URL`         FIFO queue URL (required to send)
- `SYNC_QUEUE_NAME`        Celery queue name (default: last path segment of the URL)
- `AWS_REGION`             region (default us-east-1)
- `AWS_ENDPOINT_URL`       optional local endpoint (moto)
- `SYNC_MESSAGE_GROUPS`    FIFO message groups per table (default 4)
- `SYNC_MAX_MESSAGE_BYTES` JSON budget of the changes in one message (default 100,000).
  Measured on kombu 5.7's SQS transport: the SQS body is about 1.78 x the JSON payload plus
  2.7 kB (the Celery body is base64 inside a JSON envelope that is base64 again, plus
  headers), so 100,000 bytes of changes become about 180 kB of SQS's 256 KiB.
- credentials: the usual AWS variables or the Lambda role.

Each record becomes one change (format and conversion: contract.py, next to this module).
The changes of a batch are packed into as few messages as fit, one FIFO group per table and
key bucket, so changes to one key share a group and stay in stream order in the queue (the
apply guard still keeps the order, since Celery may run messages of one group at once). The
deduplication id is a hash of the event ids in the message, so a redelivered identical batch
is enqueued once within SQS's five-minute window. Records that cannot be converted or whose
message could not be sent are reported in `batchItemFailures`; Lambda retries from the
lowest of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from celery import Celery
from kombu import Exchange, Queue

from syncer.pipeline.stream.contract import (
    APPLY_TASK_NAME,
    Change,
    RecordError,
    broker_url,
    change_from_record,
)

logger = logging.getLogger(__name__)

DEFAULT_MESSAGE_GROUPS = 4
DEFAULT_MAX_MESSAGE_BYTES = 100_000
MAX_GROUP_ID_TABLE_CHARS = 100  # MessageGroupId allows 128 characters in all


# --- configuration ---------------------------------------------------------------------
@dataclass(frozen=True)
class HandlerConfig:
    queue_url: str | None
    queue_name: str | None
    region: str
    endpoint_url: str | None
    message_groups: int = DEFAULT_MESSAGE_GROUPS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> HandlerConfig:
        env = os.environ if environ is None else environ
        queue_url = env.get("SYNC_QUEUE_URL") or None
        queue_name = env.get("SYNC_QUEUE_NAME") or (
            urlsplit(queue_url).path.rstrip("/").rsplit("/", 1)[-1] if queue_url else None
        )
        groups = int(env.get("SYNC_MESSAGE_GROUPS") or DEFAULT_MESSAGE_GROUPS)
        max_bytes = int(env.get("SYNC_MAX_MESSAGE_BYTES") or DEFAULT_MAX_MESSAGE_BYTES)
        if groups < 1 or max_bytes < 1_000:
            raise ValueError("SYNC_MESSAGE_GROUPS must be >= 1 and SYNC_MAX_MESSAGE_BYTES >= 1000")
        return cls(
            queue_url=queue_url,
            queue_name=queue_name,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            message_groups=groups,
            max_message_bytes=max_bytes,
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        )


def _broker_url(config: HandlerConfig) -> str:
    return broker_url(
        endpoint_url=config.endpoint_url,
        access_key_id=config.access_key_id,
        secret_access_key=config.secret_access_key,
    )


# --- sending ---------------------------------------------------------------------------
Sender = Callable[[list[Change], str, str], None]  # (changes, group id, dedup id)


class CelerySender:
    """Sends a list of changes as one `syncer.apply_changes` task message on the FIFO queue."""

    def __init__(self, config: HandlerConfig) -> None:
        self.config = config
        # Not the current app: in a process that also runs the project's own Celery app (the
        # relay, tests), shared tasks must keep resolving to that one.
        self.app = Celery(
            "backsync-stream-handler", broker=_broker_url(config), set_as_current=False
        )
        queues = {}
        if config.queue_name and config.queue_url:
            queues[config.queue_name] = {"url": config.queue_url}
        self.app.conf.update(
            broker_transport_options={
                "region": config.region,
                "is_secure": not (config.endpoint_url or "").startswith("http://"),
                "predefined_queues": queues,
            },
            # Own exchange and routing key, or kombu may bind the FIFO queue to another.
            task_queues=[Queue(name, Exchange(name), routing_key=name) for name in queues],
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
        )

    def __call__(self, changes: list[Change], group_id: str, dedup_id: str) -> None:
        if not self.config.queue_url or not self.config.queue_name:
            raise RuntimeError("SYNC_QUEUE_URL is not set: the stream handler has nowhere to send")
        self.app.send_task(
            APPLY_TASK_NAME,
            args=[changes],
            queue=self.config.queue_name,
            MessageGroupId=group_id,
            MessageDeduplicationId=dedup_id,
        )


# --- records -> changes ----------------------------------------------------------------
def _record_handler(record: DynamoDBRecord) -> Change:
    # The raw record keeps DynamoDB JSON (the data class would deserialize the images).
    return change_from_record(record.raw_event)


# --- packing ---------------------------------------------------------------------------
def _json_size(value: Any) -> int:
    # ensure_ascii counts non-ASCII as \u escapes: an upper bound of what kombu sends.
    return len(json.dumps(value, separators=(",", ":")))


def group_id_for(change: Change, groups: int) -> str:
    """Same table and key -> same group, so one key's changes stay in order in the queue."""
    canonical = json.dumps(change["keys"], sort_keys=True, separators=(",", ":"))
    bucket = zlib.crc32(canonical.encode()) % groups
    return f"{change['table'][:MAX_GROUP_ID_TABLE_CHARS]}-{bucket}"


def dedup_id_for(changes: Iterable[Change]) -> str:
    return hashlib.sha256("\n".join(c["id"] for c in changes).encode()).hexdigest()


@dataclass
class Message:
    group_id: str
    changes: list[Change] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    size: int = 2  # the enclosing "[]"

    @property
    def dedup_id(self) -> str:
        return dedup_id_for(self.changes)


def fit_change(change: Change, max_bytes: int) -> Change:
    """A change too large for one message travels without its image: the worker fetches."""
    if _json_size([change]) <= max_bytes or change.get("image") is None:
        return change
    logger.warning(
        "change %s (%s seq %s) is larger than %s bytes; sending it without its image",
        change["id"],
        change["table"],
        change["seq"],
        max_bytes,
    )
    return {**change, "image": None, "fetch": True}


def pack(
    items: list[tuple[dict[str, Any], Change]], *, groups: int, max_bytes: int
) -> list[Message]:
    """(record, change) pairs in stream order -> messages in the order to send them.

    Per group, changes keep stream order across that group's messages; a message is closed
    when the next change would take it over `max_bytes`.
    """
    open_by_group: dict[str, Message] = {}
    messages: list[Message] = []
    for record, change in items:
        change = fit_change(change, max_bytes)
        size = _json_size(change)
        group = group_id_for(change, groups)
        msg = open_by_group.get(group)
        if msg is None or (msg.changes and msg.size + 1 + size > max_bytes):
            msg = open_by_group[group] = Message(group_id=group)
            messages.append(msg)  # ordered by first record: stream order
        msg.size += size + (1 if msg.changes else 0)
        msg.changes.append(change)
        msg.records.append(record)
    return messages


# --- the batch processor ---------------------------------------------------------------
class PackingBatchProcessor(BatchProcessor):
    """Powertools' BatchProcessor, with the records converted one by one and then sent
    packed: a message that fails to send marks each of its records as failed."""

    def __init__(self, sender: Sender | None = None, config: HandlerConfig | None = None):
        # Reporting every record (rather than raising) tells the caller exactly which failed;
        # for Lambda both mean "retry from the lowest".
        super().__init__(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
        self.sender = sender
        self.config = config
        self.sent_messages = 0

    def process(self) -> list[tuple]:
        results = [self._process_record(record) for record in self.records]
        items = [(record, change) for status, change, record in results if status == "success"]
        if not items:
            return results
        sender = self.sender or SENDER
        config = self.config or getattr(sender, "config", None) or SENDER.config
        messages = pack(items, groups=config.message_groups, max_bytes=config.max_message_bytes)
        self.sent_messages = 0
        for msg in messages:
            try:
                sender(msg.changes, msg.group_id, msg.dedup_id)
            except Exception:
                exc_info = sys.exc_info()
                logger.exception(
                    "sending %d change(s) of group %s failed (seq %s..%s)",
                    len(msg.changes),
                    msg.group_id,
                    msg.changes[0]["seq"],
                    msg.changes[-1]["seq"],
                )
                for record in msg.records:
                    self.success_messages.remove(record)
                    results.append(self.failure_handler(DynamoDBRecord(record), exc_info))
                continue
            self.sent_messages += 1
            logger.debug(
                "sent %d change(s) to group %s (seq %s..%s)",
                len(msg.changes),
                msg.group_id,
                msg.changes[0]["seq"],
                msg.changes[-1]["seq"],
            )
        return results

    def _collect_dynamodb_failures(self):
        # A record without dynamodb/SequenceNumber gets no identifier: Lambda then treats
        # the whole batch as failed, which is the only safe reading of it.
        failures = []
        for msg in self.fail_messages:
            raw = msg.raw_event if isinstance(msg, DynamoDBRecord) else msg
            ddb = raw.get("dynamodb") if isinstance(raw, dict) else None
            seq = ddb.get("SequenceNumber") if isinstance(ddb, dict) else None
            failures.append({"itemIdentifier": seq})
        return failures


def process_event(
    event: dict[str, Any],
    context: Any = None,
    *,
    sender: Sender | None = None,
    config: HandlerConfig | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The handler's work as a plain function: returns the partial batch response."""
    processor = PackingBatchProcessor(sender=sender, config=config)
    return process_partial_response(
        event=event, record_handler=_record_handler, processor=processor, context=context
    )


def configure(environ: dict[str, str] | None = None) -> CelerySender:
    """(Re)build the module's sender from the environment; runs at import (Lambda init)."""
    global SENDER
    SENDER = CelerySender(HandlerConfig.from_env(environ))
    return SENDER


# Built once per Lambda container and reused across invocations.
SENDER: CelerySender = CelerySender(HandlerConfig.from_env())


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, Any]]]:
    return process_event(event, context)


__all__ = [
    "CelerySender",
    "HandlerConfig",
    "RecordError",
    "change_from_record",
    "configure",
    "handler",
    "pack",
    "process_event",
]
