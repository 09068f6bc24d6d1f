"""Readiness of the parts the sync depends on: MySQL, DynamoDB (every mapped table), SQS.

Two scopes: "ready" (the default) runs every check; "live" runs none and only proves that
the process answers. The load balancer uses "live": an outage of a dependency is the same
for every task, so taking them all out of service would stop what still works (the legacy
API during a DynamoDB outage) and have ECS replace healthy tasks in a loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import DatabaseError, connection


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    ms: float
    error: str = ""
    detail: str = ""


@dataclass
class HealthReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict:
        return {
            "status": "ok" if self.ok else "unavailable",
            "failed": [c.name for c in self.checks if not c.ok],
            "checks": {
                c.name: {"ok": c.ok, "ms": round(c.ms, 1)}
                | ({"error": c.error} if c.error else {})
                | ({"detail": c.detail} if c.detail else {})
                for c in self.checks
            },
        }


def _database() -> str:
    from syncer.ops.selectors import database_server_info

    info = database_server_info()  # a round trip, and which server answered it
    return f"{info['engine']} {info['version']}"


def _dynamodb() -> None:
    from syncer.aws import dynamodb_client
    from syncer.registry import registry

    client = dynamodb_client()
    for mapping in registry.all():
        client.describe_table(TableName=mapping.table_name)


def _sqs() -> None:
    from syncer.aws import sqs_client

    sqs_client().get_queue_attributes(
        QueueUrl=settings.SYNC_QUEUE_URL, AttributeNames=["ApproximateNumberOfMessages"]
    )


CHECKS: dict[str, Callable[[], str | None]] = {
    "database": _database,
    "dynamodb": _dynamodb,
    "sqs": _sqs,
}


def _error(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code") or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"[:300]


SCOPES = ("ready", "live")


def health_check(*, scope: str = "ready") -> HealthReport:
    if scope not in SCOPES:
        raise ValueError(f"unknown health scope {scope!r}; one of {', '.join(SCOPES)}")
    report = HealthReport()
    if scope == "live":
        return report
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            detail = check()
        except (DatabaseError, BotoCoreError, ClientError) as exc:
            if name == "database":
                # A broken connection must not stick to this thread for the next request.
                connection.close_if_unusable_or_obsolete()
            report.checks.append(
                Check(name, False, (time.monotonic() - started) * 1000, _error(exc))
            )
        else:
            report.checks.append(
                Check(name, True, (time.monotonic() - started) * 1000, detail=detail or "")
            )
    return report
