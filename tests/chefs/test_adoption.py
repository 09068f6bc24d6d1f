"""Adopting an existing legacy database: the README's documented steps, on a real server."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import database_url, server_connection

ROOT = Path(__file__).resolve().parents[2]
LEGACY_INIT_SQL = (
    "CREATE TABLE cheftable("
    "id BIGINT AUTO_INCREMENT PRIMARY KEY, cheffirst VARCHAR(255), cheflast VARCHAR(255))"
)


@pytest.fixture
def legacy_database():
    name = f"backsync_legacy_{uuid.uuid4().hex[:8]}"
    conn = server_connection()
    conn.autocommit(True)
    cur = conn.cursor()
    cur.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    cur.execute(f"USE {name}")
    cur.execute(LEGACY_INIT_SQL)
    cur.execute(
        "INSERT INTO cheftable (cheffirst, cheflast) VALUES "
        "('Alton', 'Brown'), ('Julia', 'Child'), (NULL, 'Nameless')"
    )
    cur.execute("DELETE FROM cheftable WHERE cheffirst = 'Julia'")  # leaves a gap in the ids
    try:
        yield name, cur
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.close()


def test_migrate_adopts_legacy_table_and_keeps_rows(legacy_database):
    name, cur = legacy_database
    env = {
        **os.environ,
        "DATABASE_URL": database_url({**connection.settings_dict, "NAME": name}),
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr

    cur.execute("SELECT id, cheffirst, cheflast, chef_id FROM cheftable ORDER BY id")
    assert cur.fetchall() == ((1, "Alton", "Brown", None), (3, None, "Nameless", None))
    # The legacy reader's query still works, and new rows continue the id sequence.
    cur.execute("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Bobby', 'Flay')")
    cur.execute("SELECT * FROM cheftable WHERE cheflast = 'Flay'")
    assert cur.fetchone()[0] == 4
    cur.execute("SHOW INDEX FROM cheftable WHERE Column_name = 'chef_id' AND Non_unique = 0")
    assert cur.fetchone() is not None

    check = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
