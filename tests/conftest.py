import contextlib
import os
from urllib.parse import quote

import MySQLdb
import pytest
from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chefs.roles import WRITERS
from syncer.store.marks import sync_writes_mark
from tests.factories import UserFactory, user_with_roles
from tests.procs import ManagedProcess, relay_argv, worker_argv


def _mark_test_connection(sender, connection, **kwargs) -> None:
    # In the test process, rows written straight through the ORM are fixtures: MySQL as the
    # sync left it (or drift made behind its back). The capture triggers skip them, as they
    # skip the sync's writes; the legacy services (legacy_write) and plain client
    # connections (tests/syncer/outbox/test_capture.py) are captured as in production.
    sync_writes_mark(conn=connection)


connection_created.connect(_mark_test_connection, dispatch_uid="backsync-tests-sync-mark")


@pytest.fixture
def user(db):
    """An API user who may read and write chefs (the writers group)."""
    return user_with_roles(WRITERS)


@pytest.fixture
def staff_user(db):
    return UserFactory(username="staff", is_staff=True, is_superuser=True)


@pytest.fixture
def api_client(user) -> APIClient:
    """A client authenticated with a DRF token, as API users are."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def legacy_sql(transactional_db):
    """A plain MySQL client connection on the test database: a legacy writer that never
    passes through Django (autocommit, as at a SQL prompt). `legacy_sql(statement)`."""
    db = connection.settings_dict
    conn = MySQLdb.connect(
        host=db["HOST"] or "127.0.0.1",
        port=int(db["PORT"] or 3306),
        user=db["USER"] or "root",
        passwd=db["PASSWORD"] or "",
        db=db["NAME"],
        charset="utf8mb4",
        autocommit=True,
    )

    def run(statement: str, params=None):
        cur = conn.cursor()
        cur.execute(statement, params)
        return cur

    run.conn = conn
    yield run
    with contextlib.suppress(MySQLdb.Error):  # a test may have closed it
        conn.close()


@pytest.fixture
def aws(moto_server):
    """A fresh, empty local AWS for one test: moto reset, then the tables and queues."""
    from syncer.local.provision import aws_resources_ensure

    moto_server.reset()
    return aws_resources_ensure()


# --- real processes: a celery worker (with beat) and the relay, for end-to-end tests ---


def database_url(db: dict) -> str:
    """The URL of the test database for a subprocess: same server, user and password as the
    run's own DATABASE_URL (a MySQL 8.0 server with its own user, say)."""
    user = quote(db["USER"] or "root", safe="")
    password = f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else ""
    host, port = db["HOST"] or "127.0.0.1", db["PORT"] or 3306
    return f"mysql://{user}{password}@{host}:{port}/{db['NAME']}"


def server_connection():
    """A plain MySQLdb connection to the run's database server, naming no database."""
    import MySQLdb

    db = settings.DATABASES["default"]
    return MySQLdb.connect(
        host=db["HOST"] or "127.0.0.1",
        port=int(db["PORT"] or 3306),
        user=db["USER"] or "root",
        password=db["PASSWORD"] or "",
    )


@pytest.fixture
def stack_env(transactional_db, aws) -> dict[str, str]:
    """Environment for processes that must share this test's database and moto server."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(connection.settings_dict),
        "AWS_ENDPOINT_URL": settings.AWS_ENDPOINT_URL,
        "PYTHONUNBUFFERED": "1",
        # Short sweep period so a lost publish task is recovered within a test's patience.
        "OUTBOX_SWEEP_SECONDS": "2",
        "OUTBOX_LOST_AFTER_SECONDS": "5",
    }


@pytest.fixture
def worker(stack_env, tmp_path):
    proc = ManagedProcess(
        "worker",
        worker_argv(schedule=tmp_path / "beat-schedule"),
        env=stack_env,
        log_dir=tmp_path,
    ).start()
    yield proc
    proc.stop()
    print(f"--- worker log ---\n{proc.log_tail()}")


@pytest.fixture
def relay(stack_env, tmp_path):
    proc = ManagedProcess(
        "relay",
        relay_argv("-v", "2"),
        env=stack_env,
        log_dir=tmp_path,
    ).start()
    yield proc
    proc.stop()
    print(f"--- relay log ---\n{proc.log_tail()}")
