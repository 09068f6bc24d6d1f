"""What an Aurora failover and a first deploy look like to the worker, on the real database.

Both are transient: the batch is retried (the SQS message is not acknowledged as done), no
change is kept as failed, and everything lands once the database is writable again.
- Failover: the old writer answers 1290 (read-only) until the client reconnects to the new
  one. `SET GLOBAL read_only=ON` makes MariaDB answer that to a user without the
  READ_ONLY ADMIN / SUPER privilege, so the worker here connects as such a user.
- First deploy: the workers can start before the migrations have run (1146, no table).
"""

from __future__ import annotations

import os

import boto3
import pytest
from django.conf import settings
from django.db import connection

from syncer.models import FailedChange
from tests.conftest import database_url
from tests.procs import ManagedProcess, wait_until, worker_argv
from tests.stores import dynamo_rows, log_entries, mysql_rows

pytestmark = pytest.mark.e2e


def _put(n: int, prefix: str) -> None:
    client = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    for i in range(n):
        client.put_item(
            TableName="chef",
            Item={
                "ChefId": {"S": f"{prefix}#{i}"},
                "firstName": {"S": f"F{i}"},
                "lastName": {"S": prefix},
            },
        )


def _worker_tried(worker: ManagedProcess, code: int):
    return lambda: f"({code}," in worker.log_path.read_text(errors="replace")


@pytest.fixture
def restricted_user(transactional_db):
    """A database user with every privilege on the test database and none of SUPER /
    READ_ONLY ADMIN: what an application user is on Aurora."""
    name, password = f"bs_app_{os.getpid()}", "app-password"
    db = connection.settings_dict["NAME"]
    with connection.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")
        cur.execute(f"CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'")
        cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{name}'@'127.0.0.1'")
    yield name, password
    with connection.cursor() as cur:
        cur.execute(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")


def test_a_read_only_writer_is_retried_never_failed(stack_env, restricted_user, relay, tmp_path):
    name, password = restricted_user
    db = {**connection.settings_dict, "USER": name, "PASSWORD": password}
    env = {**stack_env, "DATABASE_URL": database_url(db)}
    worker = ManagedProcess(
        "worker", worker_argv(schedule=tmp_path / "beat"), env=env, log_dir=tmp_path
    ).start()
    try:
        _put(3, "Before")
        wait_until(lambda: len(mysql_rows()) == 3, what="the worker applies as the app user")
        with connection.cursor() as cur:
            cur.execute("SET GLOBAL read_only = ON")
        try:
            _put(10, "During")
            wait_until(_worker_tried(worker, 1290), timeout=60, what="an apply refused with 1290")
            # Nothing applied, nothing failed: the batch waits for its retry.
            assert len(mysql_rows()) == 3
            assert not FailedChange.objects.exists()
        finally:
            with connection.cursor() as cur:
                cur.execute("SET GLOBAL read_only = OFF")
        wait_until(lambda: mysql_rows() == dynamo_rows(), timeout=90, what="the retried batch")
        assert len(mysql_rows()) == 13
        assert not FailedChange.objects.exists()
        assert len(log_entries(outcome="applied")) == 13
    finally:
        worker.stop()
        print(f"--- worker log ---\n{worker.log_tail()}")


def test_a_missing_table_is_retried_until_the_schema_is_there(worker, relay):
    _put(2, "Before")
    wait_until(lambda: len(mysql_rows()) == 2, what="the first changes")
    applied = len(log_entries())
    with connection.cursor() as cur:
        cur.execute("RENAME TABLE cheftable TO cheftable_not_yet")
    try:
        _put(5, "During")
        wait_until(_worker_tried(worker, 1146), timeout=60, what="an apply refused with 1146")
        assert not FailedChange.objects.exists()
        assert len(log_entries()) == applied  # rolled back with its batch
    finally:
        with connection.cursor() as cur:
            cur.execute("RENAME TABLE cheftable_not_yet TO cheftable")
    wait_until(lambda: mysql_rows() == dynamo_rows(), timeout=90, what="the retried batch")
    assert len(mysql_rows()) == 7
    assert not FailedChange.objects.exists()
