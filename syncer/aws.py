"""AWS access from settings: boto3 clients, pynamodb model settings, and error translation.

Every AWS endpoint, region and timeout is read here, so a local endpoint (moto) or a test
override is applied in one place. Creating the tables and queues for development is
`syncer.local.provision`'s job.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError
from django.conf import settings
from pynamodb.exceptions import PynamoDBException

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
CONNECTION_ERRORS = (BotoConnectionError, ConnectTimeoutError, ReadTimeoutError)


def dynamo_error_is_unavailable(exc: BaseException) -> bool:
    """True when `exc` (pynamodb or botocore) means DynamoDB is unreachable or throttling."""
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    if isinstance(cause, CONNECTION_ERRORS):
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
