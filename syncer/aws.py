"""AWS access from settings: boto3 clients, pynamodb model settings, and resource setup.

Every AWS endpoint, region and timeout is read here, so a local endpoint (moto) or a test
override is applied in one place. `aws_resources_ensure` creates or updates, idempotently,
the table of every registered mapping and the SQS queues the sync uses.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from pynamodb.exceptions import PynamoDBException

STREAM_VIEW_TYPE = "NEW_AND_OLD_IMAGES"
BILLING_MODE = "PAY_PER_REQUEST"
# DLQs keep messages for the longest time SQS allows (14 days), so nothing expires unseen.
DLQ_RETENTION_SECONDS = 1_209_600

# DynamoDB answers that mean "try again later", not "your request is wrong".
RETRYABLE_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionInProgressException",
    }
)


class DynamoUnavailable(Exception):
    """DynamoDB cannot be reached or is throttling; the caller may retry after a while."""

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- settings, read in one place --------------------------------------------------------
@dataclass(frozen=True)
class AwsEndpoint:
    url: str | None  # None: the real AWS endpoints
    region: str


def aws_endpoint() -> AwsEndpoint:
    return AwsEndpoint(url=settings.AWS_ENDPOINT_URL or None, region=settings.AWS_REGION)


def dynamo_model_meta(*, table_name: str) -> type:
    """A pynamodb `Meta` class for a model of `table_name`, from settings.

    Short timeouts and few retries: a web request must fail fast (503) when DynamoDB is
    unreachable rather than hang for botocore's default of a minute.
    """
    endpoint = aws_endpoint()
    return type(
        "Meta",
        (),
        {
            "table_name": table_name,
            "region": endpoint.region,
            "host": endpoint.url,
            "connect_timeout_seconds": settings.DYNAMO_CONNECT_TIMEOUT,
            "read_timeout_seconds": settings.DYNAMO_READ_TIMEOUT,
            "max_retry_attempts": settings.DYNAMO_MAX_RETRIES,
        },
    )


def dynamo_model_reconnect(model, *, host: str | None = None, table_name: str | None = None):
    """Point a pynamodb model at another endpoint/table (tests, settings overrides).

    pynamodb caches its connection on the class, so the cache is dropped too.
    """
    endpoint = aws_endpoint()
    model.Meta.host = host or endpoint.url
    model.Meta.region = endpoint.region
    if table_name is not None:
        model.Meta.table_name = table_name
    model._connection = None
    return model


def aws_endpoint_check(app_configs=None, **kwargs) -> list:
    """System check, local settings only (they set LOCAL_STACK_ENV_FILE): no AWS endpoint
    means real AWS, which on a developer machine is nearly always a stack not found."""
    from django.core import checks

    env_file = getattr(settings, "LOCAL_STACK_ENV_FILE", None)
    if not env_file or settings.AWS_ENDPOINT_URL:
        return []
    return [
        checks.Warning(
            "AWS_ENDPOINT_URL is not set: AWS calls go to real AWS "
            f"(https://dynamodb.{settings.AWS_REGION}.amazonaws.com), not to a local stack.",
            hint=f"Start the local stack with `make up`: it writes {env_file}, which "
            "manage.py reads. Or export AWS_ENDPOINT_URL (e.g. http://127.0.0.1:5000).",
            id="syncer.W001",
        )
    ]


# --- boto3 clients ----------------------------------------------------------------------
_clients: dict[tuple, Any] = {}


def _client(service: str, *, read_timeout: float | None = None):
    endpoint = aws_endpoint()
    read_timeout = read_timeout or settings.DYNAMO_READ_TIMEOUT
    cache_key = (
        service,
        endpoint.url,
        endpoint.region,
        settings.DYNAMO_CONNECT_TIMEOUT,
        read_timeout,
        settings.DYNAMO_MAX_RETRIES,
    )
    client = _clients.get(cache_key)
    if client is None:
        # boto3 clients are thread-safe; creating one costs tens of milliseconds.
        config = Config(
            region_name=endpoint.region,
            connect_timeout=settings.DYNAMO_CONNECT_TIMEOUT,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1 + settings.DYNAMO_MAX_RETRIES, "mode": "standard"},
        )
        client = boto3.session.Session().client(
            service, region_name=endpoint.region, endpoint_url=endpoint.url, config=config
        )
        _clients[cache_key] = client
    return client


def dynamodb_client():
    return _client("dynamodb")


def dynamodb_scan_client():
    """For whole-table Scans (reconcile): a 1 MB Scan page is a batch job's read, not a web
    request's, so it may take longer than DYNAMO_READ_TIMEOUT (moto needs ~6 s per page,
    and several times that with parallel segments) without DynamoDB being unavailable."""
    return _client(
        "dynamodb",
        read_timeout=max(settings.DYNAMO_SCAN_READ_TIMEOUT, settings.DYNAMO_READ_TIMEOUT),
    )


def streams_client():
    return _client("dynamodbstreams")


def sqs_client():
    return _client("sqs")


def s3_client():
    return _client("s3")


def cloudwatch_client():
    return _client("cloudwatch")


# --- error translation ------------------------------------------------------------------
_CONNECTION_ERRORS = (BotoConnectionError, ConnectTimeoutError, ReadTimeoutError)


def dynamo_error_is_unavailable(exc: BaseException) -> bool:
    """True when `exc` (pynamodb or botocore) means DynamoDB is unreachable or throttling."""
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    if isinstance(cause, _CONNECTION_ERRORS):
        return True
    if isinstance(cause, ClientError):
        return cause.response.get("Error", {}).get("Code") in RETRYABLE_ERROR_CODES
    return False


@contextmanager
def dynamo_errors():
    """Turn "unreachable / throttled" into DynamoUnavailable; other errors pass unchanged."""
    try:
        yield
    except (PynamoDBException, BotoCoreError, ClientError) as exc:
        if dynamo_error_is_unavailable(exc):
            cause = getattr(exc, "cause", None) or exc
            raise DynamoUnavailable(f"DynamoDB is unavailable: {cause}") from exc
        raise


# --- resource setup ---------------------------------------------------------------------
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
    except _CONNECTION_ERRORS as exc:
        raise DynamoUnavailable(f"AWS endpoint unreachable: {exc}") from exc
    return report
