"""reconcile on a live system: a writer keeps writing to the new API through every run.

Changes still in flight when the scan passes them must be rechecked and counted as in
flight, never reported as drift (exit 1); a difference made behind the sync's back in
MySQL during the same traffic must still be found, and only that key.
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
from urllib.parse import quote

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.procs import wait_until
from tests.stores import dynamo_rows, mysql_rows

pytestmark = pytest.mark.e2e

KEYS = 40
WRITES_PER_SECOND = 20


def reconcile(*argv: str) -> tuple[int, dict, float]:
    out = io.StringIO()
    started = time.monotonic()
    try:
        call_command("reconcile", "--format", "json", *argv, stdout=out, stderr=io.StringIO())
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, json.loads(out.getvalue()), time.monotonic() - started


class Writer(threading.Thread):
    """PATCHes random keys through /dynamo/chefs at a steady rate until stopped."""

    def __init__(self, token: str, keys: list[str]):
        super().__init__(daemon=True)
        self.token, self.keys = token, keys
        self.stop = threading.Event()
        self.writes = 0
        self.errors: list[str] = []

    def run(self) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {self.token}")
        rng = random.Random(19)
        interval = 1 / WRITES_PER_SECOND
        next_at = time.monotonic()
        try:
            while not self.stop.is_set():
                key = rng.choice(self.keys)
                r = client.patch(
                    f"/dynamo/chefs/{quote(key, safe='')}",
                    {"firstName": f"F{self.writes}"},
                    format="json",
                )
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code} {r.content[:200]!r}")
                self.writes += 1
                next_at += interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))
        finally:
            connection.close()  # this thread's own connection


def test_reconcile_under_traffic_reports_only_real_drift(api_client, user, worker, relay):
    keys = [f"Live{i:02d}#Key" for i in range(KEYS)]
    for key in [*keys, "Quiet#Key"]:
        last, first = key.split("#")
        r = api_client.post(
            "/dynamo/chefs", {"chefId": key, "firstName": first, "lastName": last}, format="json"
        )
        assert r.status_code == 201, r.content
    wait_until(lambda: mysql_rows() == dynamo_rows(), timeout=120, what="initial sync")

    code, quiet, quiet_seconds = reconcile()
    assert code == 0 and quiet["drift"] == 0, quiet

    writer = Writer(Token.objects.get(user=user).key, keys)
    writer.start()
    try:
        runs = []
        for argv in ((), ("--distributed", "--timeout", "180"), ()):
            code, report, seconds = reconcile(*argv)
            runs.append((code, report, seconds))
        # Behind the sync's back: legacy SQL edits a row that no one writes in DynamoDB.
        with connection.cursor() as cur:
            cur.execute("UPDATE cheftable SET cheffirst = 'Tampered' WHERE chef_id = 'Quiet#Key'")
        tampered = reconcile()
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert not writer.errors, writer.errors[:5]

    mapping_of = [r["mappings"][0] for _, r, _ in runs]
    print(
        f"quiet run {quiet_seconds:.2f}s; under traffic "
        + ", ".join(f"{s:.2f}s" for _, _, s in runs)
        + f"; settle {runs[0][1]['options']['settle']}s; writes {writer.writes}; "
        + "settled/in flight per run "
        + ", ".join(f"{m['counts']['settled']}/{m['counts']['in_flight']}" for m in mapping_of)
    )
    for code, report, _ in runs:
        assert code == 0, json.dumps(report["mappings"][0], indent=1)
        assert report["drift"] == 0
    # The runs met changes in flight (else this test proves nothing) and reported them.
    assert sum(m["counts"]["settled"] + m["counts"]["in_flight"] for m in mapping_of) > 0

    code, report, _ = tampered
    m = report["mappings"][0]
    assert code == 1, json.dumps(m, indent=1)
    assert report["drift"] == 1 and m["counts"]["different"] == 1, json.dumps(m, indent=1)
    [sample] = m["samples"]["different"]
    assert sample["key"] == "Quiet#Key" and sample["fields"] == ["first_name"]
    assert sample["mysql"]["first_name"] == "Tampered"
