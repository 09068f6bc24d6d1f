"""Adopting a legacy database end to end: legacy table with rows -> migrate -> backfill ->
reconcile says in sync."""

import json
import os
import subprocess
import sys

from django.db import connection

from tests.chefs.test_adoption import legacy_database  # noqa: F401 - fixture
from tests.conftest import database_url
from tests.procs import ROOT


def manage(env, *argv, timeout=180):
    return subprocess.run(
        [sys.executable, "manage.py", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_legacy_rows_get_keys_reach_dynamo_and_reconcile_in_sync(legacy_database, aws):  # noqa: F811
    name, cur = legacy_database
    cur.execute("DELETE FROM cheftable WHERE cheffirst IS NULL")  # the mapping needs both names
    cur.execute(
        "INSERT INTO cheftable (cheffirst, cheflast) VALUES "
        + ", ".join(f"('First{i}', 'Last{i}')" for i in range(60))
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url({**connection.settings_dict, "NAME": name}),
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
    }
    assert manage(env, "migrate", "--noinput").returncode == 0

    before = manage(env, "reconcile", "--format", "json")
    assert before.returncode == 1, before.stderr
    assert json.loads(before.stdout)["mappings"][0]["counts"]["unkeyed"] == 61

    backfill = manage(env, "backfill", "--to", "dynamo", "--batch-size", "25")
    assert backfill.returncode == 0, backfill.stderr
    assert "61 read, 61 written, 0 already current, 0 kept" in backfill.stdout
    assert "0 failed, 61 given a key" in backfill.stdout

    after = manage(env, "reconcile", "--format", "json")
    assert after.returncode == 0, after.stdout + after.stderr
    report = json.loads(after.stdout)["mappings"][0]
    assert report["counts"]["equal"] == 61 and report["dynamo_items"] == 61
    cur.execute("SELECT COUNT(*), COUNT(DISTINCT chef_id) FROM cheftable")
    assert cur.fetchone() == (61, 61)
    cur.execute("SELECT chef_id FROM cheftable WHERE cheffirst = 'Alton'")
    assert cur.fetchone() == ("Brown#Alton",)

    # From here on every legacy write is captured; the backfill's own writes were not.
    cur.execute("SELECT COUNT(*) FROM syncer_outboxentry")
    assert cur.fetchone() == (0,)
    cur.execute("UPDATE cheftable SET cheflast = 'Browne' WHERE chef_id = 'Brown#Alton'")
    cur.execute("SELECT op, `key`, base_version FROM syncer_outboxentry")
    assert cur.fetchall() == (("upsert", "Brown#Alton", 1),)
