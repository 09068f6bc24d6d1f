"""Fault injection: a flow of changes through the real pipeline while processes are
killed, the database link is cut and messages are redelivered; then both stores must be
equal, with no duplicate rows, every stream record accounted for, and exactly the poison
changes kept as failed.

The worker here sees a short SQS visibility timeout and a short retry backoff, so what a
killed worker held comes back (and a retried batch runs again) within a test's patience.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3
import pytest
from django.conf import settings
from django.db import connection

from syncer.models import AppliedChange, FailedChange
from tests.procs import ManagedProcess, relay_argv, wait_until, worker_argv
from tests.stores import dynamo_rows, mysql_rows, stream_records  # noqa: F401 - used by the tests

VISIBILITY_TIMEOUT = 6  # seconds; a SIGKILLed worker's messages come back after this
OUTBOX_VISIBILITY_TIMEOUT = 30


# --- processes ----------------------------------------------------------------------------


@pytest.fixture
def fault_env(stack_env) -> dict[str, str]:
    # kombu receives from predefined queues with the queue's own VisibilityTimeout
    # attribute (aws_resources_ensure set it to the production value, 11 minutes).
    # The outbox queue keeps a longer one: a sweep task with a backlog to re-enqueue runs
    # for seconds on moto, and a sweep redelivered while it runs doubles the backlog.
    sqs = boto3.client("sqs", endpoint_url=settings.AWS_ENDPOINT_URL)
    for url, seconds in (
        (settings.SYNC_QUEUE_URL, VISIBILITY_TIMEOUT),
        (settings.OUTBOX_QUEUE_URL, OUTBOX_VISIBILITY_TIMEOUT),
    ):
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": str(seconds)})
    return {
        **stack_env,
        "SQS_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        # A retried batch (database down) runs again within seconds of the link's return.
        "CELERY_RETRY_BACKOFF_MAX": "4",
        # Sweep less often than stack_env's 2 s: each sweep is a message on moto's slow SQS.
        "OUTBOX_SWEEP_SECONDS": "5",
    }


@pytest.fixture
def make_worker(fault_env, tmp_path):
    """Build celery workers (with beat, as deployed locally) with env overrides."""
    made: list[ManagedProcess] = []

    def make(name: str = "worker", **overrides: str) -> ManagedProcess:
        proc = ManagedProcess(
            name,
            worker_argv(schedule=tmp_path / f"{name}-beat-schedule"),
            env={**fault_env, **overrides},
            log_dir=tmp_path,
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.stop()
        print(f"--- {proc.name} log ---\n{proc.log_tail(40)}")


@pytest.fixture
def fault_worker(make_worker):
    return make_worker().start()


@pytest.fixture
def fault_relay(fault_env, tmp_path):
    proc = ManagedProcess(
        "relay",
        relay_argv("--poll-interval", "0.2", "-v", "2"),
        env=fault_env,
        log_dir=tmp_path,
    ).start()
    yield proc
    proc.stop()
    print(f"--- relay log ---\n{proc.log_tail(40)}")


# --- the flow of changes ---------------------------------------------------------------------


@dataclass
class ChangeFlow:
    """`total` DynamoDB writes (puts and deletes over `keys` keys) with `poison` changes
    that cannot be applied (a number where a string belongs); each poison key is written
    again with good values later, so the stores can end equal while the poison change
    itself stays failed."""

    total: int = 2000
    keys: int = 300
    poison: tuple[int, ...] = (400, 1300)
    seed: int = 8
    live: set[str] = field(default_factory=set)

    def run(self, on_step: Callable[[int], None] | None = None) -> None:
        client = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
        rng = random.Random(self.seed)
        fix_at = {p: min(self.total - 1, p + 300) for p in self.poison}
        for n in range(self.total):
            if on_step:
                on_step(n)
            if n in self.poison:
                item = {"ChefId": {"S": f"Poison#{n}"}, "firstName": {"N": str(n)}}
                client.put_item(TableName="chef", Item={**item, "lastName": {"S": "bad"}})
                continue
            fixes = [p for p, at in fix_at.items() if at == n]
            if fixes:
                key = f"Poison#{fixes[0]}"
                client.put_item(TableName="chef", Item=_item(key, f"Fixed {n}"))
                continue
            key = f"Key#{rng.randrange(self.keys):04d}"
            if key in self.live and rng.random() < 0.2:
                client.delete_item(TableName="chef", Key={"ChefId": {"S": key}})
                self.live.discard(key)
            else:
                client.put_item(TableName="chef", Item=_item(key, f"F{n}"))
                self.live.add(key)


def _item(key: str, first: str) -> dict:
    return {"ChefId": {"S": key}, "firstName": {"S": first}, "lastName": {"S": key}}


# --- what must hold at the end -------------------------------------------------------------


def is_poison(record: dict) -> bool:
    image = record["dynamodb"].get("NewImage") or {}
    return "N" in image.get("firstName", {})


def failed_ids() -> set[str]:
    return set(
        FailedChange.objects.filter(status=FailedChange.Status.FAILED).values_list(
            "event_id", flat=True
        )
    )


def assert_converged(*, timeout: float = 120) -> dict[str, int]:
    """Both stores equal, no duplicate rows, every stream record applied (or stale) except
    the poison ones, which are exactly the changes kept as failed. Returns some counts."""
    try:
        wait_until(
            lambda: mysql_rows() == dynamo_rows(),
            timeout=timeout,
            interval=1,
            what="MySQL equal to DynamoDB",
        )
    except AssertionError:
        mysql, dynamo = mysql_rows(), dynamo_rows()
        diff = {
            k: (mysql.get(k), dynamo.get(k))
            for k in set(mysql) | set(dynamo)
            if mysql.get(k) != dynamo.get(k)
        }
        raise AssertionError(
            f"stores differ on {len(diff)} key(s) (mysql, dynamo): {diff}"
        ) from None
    records = stream_records()
    poison = {r["eventID"] for r in records if is_poison(r)}
    assert poison, "the flow wrote no poison change"
    good = {r["eventID"] for r in records} - poison
    wait_until(lambda: failed_ids() == poison, timeout=60, what="exactly the poison failed")

    def unaccounted() -> set[str]:
        return good - set(AppliedChange.objects.values_list("event_id", flat=True))

    wait_until(lambda: not unaccounted(), timeout=60, what="every good record in the log")
    rows = mysql_rows()
    assert rows == dynamo_rows()
    assert None not in rows
    with connection.cursor() as cur:
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT chef_id) FROM cheftable")
        total, distinct = cur.fetchone()
    assert total == distinct == len(rows)
    assert not any(k.startswith("Poison#") and v[1] == "bad" for k, v in rows.items())
    log = AppliedChange.objects.values_list("event_id", flat=True)
    return {"records": len(records), "applications": log.count(), "rows": len(rows)}
