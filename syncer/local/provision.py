"""Local provisioning, for development and tests only: the DynamoDB table of every registered
mapping (on demand, with a NEW_AND_OLD_IMAGES stream) and the sync's SQS queues with their
DLQs, created or updated idempotently (`manage.py dynamo_setup`). In AWS the CDK stack
(deploy/) owns these resources.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from syncer.aws import CONNECTION_ERRORS, DynamoUnavailable, dynamodb_client, sqs_client

STREAM_VIEW_TYPE = "NEW_AND_OLD_IMAGES"
BILLING_MODE = "PAY_PER_REQUEST"
# DLQs keep messages for the longest time SQS allows (14 days), so nothing expires unseen.
DLQ_RETENTION_SECONDS = 1_209_600


@dataclass
class ResourceStatus:
    kind: str  # "table" | "queue"
    name: str
    action: str  # "created" | "updated" | "unchanged" | "missing" | "would create" | ...
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return f"{self.kind} {self.name}: {self.action}" + (f" ({extra})" if extra else "")


@dataclass
class AwsSetupReport:
    resources: list[ResourceStatus] = field(default_factory=list)

    def get(self, kind: str, name: str) -> ResourceStatus:
        for r in self.resources:
            if r.kind == kind and r.name == name:
                return r
        raise KeyError((kind, name))

    @property
    def changed(self) -> bool:
        return any(r.action not in ("unchanged",) for r in self.resources)


def _wait_table_active(client, table_name: str, *, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        table = client.describe_table(TableName=table_name)["Table"]
        if table["TableStatus"] == "ACTIVE":
            return table
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {table_name} not ACTIVE after {timeout}s")
        time.sleep(1)


def _table_details(table: dict) -> dict[str, Any]:
    spec = table.get("StreamSpecification") or {}
    return {
        "key": ",".join(k["AttributeName"] for k in table["KeySchema"]),
        "billing": (table.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED"),
        "stream": spec.get("StreamViewType") if spec.get("StreamEnabled") else "off",
        "stream_arn": table.get("LatestStreamArn"),
    }


def table_ensure(*, table_name: str, key_attribute: str, dry_run: bool = False) -> ResourceStatus:
    """The table exists, on demand, with a NEW_AND_OLD_IMAGES stream."""
    client = dynamodb_client()
    try:
        table = client.describe_table(TableName=table_name)["Table"]
    except client.exceptions.ResourceNotFoundException:
        table = None

    if table is None:
        if dry_run:
            return ResourceStatus("table", table_name, "would create")
        client.create_table(
            TableName=table_name,
            KeySchema=[{"AttributeName": key_attribute, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key_attribute, "AttributeType": "S"}],
            BillingMode=BILLING_MODE,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW_TYPE},
        )
        table = _wait_table_active(client, table_name)
        return ResourceStatus("table", table_name, "created", _table_details(table))

    key = [k["AttributeName"] for k in table["KeySchema"] if k["KeyType"] == "HASH"]
    if key != [key_attribute]:
        # A key schema cannot be changed in place; refuse rather than guess.
        raise ImproperlyConfigured(
            f"table {table_name} has hash key {key}, the mapping expects {key_attribute!r}"
        )
    changes = []
    details = _table_details(table)
    if details["billing"] != BILLING_MODE:
        changes.append(("billing", {"BillingMode": BILLING_MODE}))
    if details["stream"] != STREAM_VIEW_TYPE:
        changes.append(("stream", None))
    if not changes:
        return ResourceStatus("table", table_name, "unchanged", details)
    if dry_run:
        return ResourceStatus(
            "table", table_name, "would update " + "+".join(c for c, _ in changes), details
        )
    for what, update in changes:
        if what == "billing":
            client.update_table(TableName=table_name, **update)
        else:
            if details["stream"] != "off":
                # Another view type: AWS only changes it by disabling and enabling again.
                client.update_table(
                    TableName=table_name, StreamSpecification={"StreamEnabled": False}
                )
                _wait_table_active(client, table_name)
            client.update_table(
                TableName=table_name,
                StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW_TYPE},
            )
        _wait_table_active(client, table_name)
    table = _wait_table_active(client, table_name)
    return ResourceStatus("table", table_name, "updated", _table_details(table))


def _queue_url_get(client, name: str) -> str | None:
    try:
        return client.get_queue_url(QueueName=name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        return None


def queue_ensure(
    *,
    name: str,
    fifo: bool,
    attributes: dict[str, str],
    dry_run: bool = False,
) -> tuple[ResourceStatus, str | None]:
    """The queue exists with these attributes. Returns its status and URL."""
    if name.endswith(".fifo") != fifo:
        raise ImproperlyConfigured(
            f"queue {name!r}: a {'FIFO' if fifo else 'standard'} queue name must "
            f"{'' if fifo else 'not '}end in '.fifo'"
        )
    client = sqs_client()
    wanted = dict(attributes)
    if fifo:
        wanted.setdefault("ContentBasedDeduplication", "false")
    url = _queue_url_get(client, name)
    if url is None:
        if dry_run:
            return ResourceStatus("queue", name, "would create"), None
        create_attrs = dict(wanted)
        if fifo:
            create_attrs["FifoQueue"] = "true"
        url = client.create_queue(QueueName=name, Attributes=create_attrs)["QueueUrl"]
        return ResourceStatus("queue", name, "created", {"url": url}), url

    current = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    differ = {k: v for k, v in wanted.items() if not _same_attribute(k, current.get(k), v)}
    if not differ:
        return ResourceStatus("queue", name, "unchanged", {"url": url}), url
    if dry_run:
        return ResourceStatus("queue", name, "would update " + "+".join(differ), {"url": url}), url
    client.set_queue_attributes(QueueUrl=url, Attributes=differ)
    return ResourceStatus("queue", name, "updated " + "+".join(differ), {"url": url}), url


def _same_attribute(name: str, current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if name == "RedrivePolicy":
        try:
            cur, want = json.loads(current), json.loads(wanted)
        except ValueError:
            return False
        return cur.get("deadLetterTargetArn") == want["deadLetterTargetArn"] and str(
            cur.get("maxReceiveCount")
        ) == str(want["maxReceiveCount"])
    return current.lower() == wanted.lower()


def _queue_arn(name: str) -> str:
    return f"arn:aws:sqs:{settings.AWS_REGION}:{settings.AWS_ACCOUNT_ID}:{name}"


def _queue_pair_ensure(
    *, name: str, dlq_name: str, fifo: bool, expected_url: str, dry_run: bool
) -> list[ResourceStatus]:
    visibility = str(settings.SQS_VISIBILITY_TIMEOUT)
    dlq_status, dlq_url = queue_ensure(
        name=dlq_name,
        fifo=fifo,
        attributes={
            "VisibilityTimeout": visibility,
            "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
        },
        dry_run=dry_run,
    )
    if dlq_url is not None:
        dlq_arn = sqs_client().get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    else:
        dlq_arn = _queue_arn(dlq_name)
    redrive = json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.SQS_MAX_RECEIVE_COUNT}
    )
    status, url = queue_ensure(
        name=name,
        fifo=fifo,
        attributes={"VisibilityTimeout": visibility, "RedrivePolicy": redrive},
        dry_run=dry_run,
    )
    status.details.update(dlq=dlq_name, maxReceiveCount=settings.SQS_MAX_RECEIVE_COUNT)
    if url is not None and url != expected_url:
        # Celery's predefined_queues use the URL from settings; a different one would make
        # the worker and the producers talk to a queue that does not exist.
        raise ImproperlyConfigured(
            f"queue {name}: settings give URL {expected_url} but SQS returns {url}; "
            "set the queue URL (or AWS_ACCOUNT_ID / AWS_ENDPOINT_URL) to match"
        )
    return [dlq_status, status]


def aws_resources_ensure(*, stdout: TextIO | None = None, dry_run: bool = False) -> AwsSetupReport:
    """Create or update every table of the registered mappings and the sync's SQS queues.

    Safe to run any number of times. Raises ImproperlyConfigured on a conflict it will not
    resolve on its own, and DynamoUnavailable when AWS cannot be reached.
    """
    from syncer.registry import registry

    report = AwsSetupReport()

    def add(status: ResourceStatus) -> None:
        report.resources.append(status)
        if stdout is not None:
            stdout.write(status.line() + "\n")

    try:
        for mapping in registry.all():
            add(
                table_ensure(
                    table_name=mapping.table_name,
                    key_attribute=mapping.key_attribute,
                    dry_run=dry_run,
                )
            )
        queue_pairs = (  # name, DLQ name, FIFO, the URL settings expect
            (settings.SYNC_QUEUE_NAME, settings.SYNC_DLQ_NAME, True, settings.SYNC_QUEUE_URL),
            (
                settings.OUTBOX_QUEUE_NAME,
                settings.OUTBOX_DLQ_NAME,
                False,
                settings.OUTBOX_QUEUE_URL,
            ),
            (
                settings.RECONCILE_QUEUE_NAME,
                settings.RECONCILE_DLQ_NAME,
                False,
                settings.RECONCILE_QUEUE_URL,
            ),
        )
        for name, dlq_name, fifo, url in queue_pairs:
            for status in _queue_pair_ensure(
                name=name, dlq_name=dlq_name, fifo=fifo, expected_url=url, dry_run=dry_run
            ):
                add(status)
    except CONNECTION_ERRORS as exc:
        raise DynamoUnavailable(f"AWS endpoint unreachable: {exc}") from exc
    return report
