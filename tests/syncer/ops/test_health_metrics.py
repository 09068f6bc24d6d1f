"""/healthz, /metrics (in-process and from a real worker), and JSON log lines."""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import boto3
import pytest
from django.conf import settings
from django.db import DatabaseError
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from config.logging import JsonFormatter
from syncer.models import OutboxEntry
from syncer.ops import health
from syncer.ops.metrics import MULTIPROC_ENV
from syncer.pipeline.apply import changes_apply
from tests.plugins.aws import free_port
from tests.procs import wait_until
from tests.syncer import conftest as syncer_conftest
from tests.syncer.conftest import gadget_change

gadget_mapping = syncer_conftest.gadget_mapping  # the fixture, shared


def ops_headers() -> dict[str, str]:
    """The metrics token (config/settings/test.py): /metrics and /healthz details need it."""
    return {"HTTP_AUTHORIZATION": f"Bearer {settings.METRICS_TOKEN}"}


def samples(client) -> dict[tuple[str, frozenset], float]:
    r = client.get("/metrics", **ops_headers())
    assert r.status_code == 200
    assert r["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.content.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(data, name: str, **labels: str) -> float:
    return data.get((name, frozenset(labels.items())), 0.0)


# --- /healthz ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_healthz_ok(client, aws):
    r = client.get("/healthz", **ops_headers())
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["status"] == "ok" and body["failed"] == []
    assert set(body["checks"]) == {"database", "dynamodb", "sqs"}
    engine, version = body["checks"]["database"]["detail"].split(" ")
    assert engine in ("MariaDB", "MySQL") and version.count(".") == 2


@pytest.mark.django_db
def test_healthz_names_the_unreachable_parts(client):
    with override_settings(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"):
        r = client.get("/healthz", **ops_headers())
    assert r.status_code == 503
    body = r.json()
    assert body["failed"] == ["dynamodb", "sqs"]
    assert body["checks"]["database"]["ok"] is True
    assert "error" in body["checks"]["sqs"]


@pytest.mark.django_db
def test_healthz_reports_a_database_failure(client, aws, monkeypatch):
    def broken():
        raise DatabaseError('(2003, "Can\'t connect to MySQL server")')

    monkeypatch.setitem(health.CHECKS, "database", broken)
    r = client.get("/healthz", **ops_headers())
    assert r.status_code == 503
    assert r.json()["failed"] == ["database"]


@pytest.mark.django_db
def test_healthz_when_a_table_is_missing(client, aws):
    boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL).delete_table(
        TableName=settings.DYNAMO_CHEF_TABLE
    )
    r = client.get("/healthz", **ops_headers())
    assert r.status_code == 503
    assert r.json()["checks"]["dynamodb"]["error"] == "ResourceNotFoundException"


# --- /metrics in this process ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("gadget_mapping")
def test_metrics_count_applies_failures_lag_and_backlog(
    client, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    before = samples(client)
    now = time.time()
    with django_capture_on_commit_callbacks(execute=True):
        changes_apply(
            changes=[
                gadget_change("m1", "INSERT", 1, ts=now - 3),
                gadget_change("m2", "INSERT", 2, ts=now - 3),
                gadget_change("m1", "MODIFY", 0, ts=now - 3),  # older: stale
                gadget_change("m3", "INSERT", 3, image={"Sku": {"S": "m3"}}),  # no name
            ]
        )
    OutboxEntry.objects.create(mapping="gadget", object_pk="1", op="upsert", values={})
    after = samples(client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    applied = {"mapping": "gadget", "event": "INSERT", "outcome": "applied"}
    assert delta("backsync_changes_applied_total", **applied) == 2
    stale = {"mapping": "gadget", "event": "MODIFY", "outcome": "stale"}
    assert delta("backsync_changes_applied_total", **stale) == 1
    failed = {"mapping": "gadget", "event": "INSERT", "source": "apply"}
    assert delta("backsync_changes_failed_total", **failed) == 1
    assert delta("backsync_sync_lag_seconds_count", mapping="gadget") == 2
    # Lag about 3 s: in the (2, 5] bucket, not in (0, 2].
    assert delta("backsync_sync_lag_seconds_bucket", mapping="gadget", le="2.0") == 0
    assert delta("backsync_sync_lag_seconds_bucket", mapping="gadget", le="5.0") == 2
    assert value(after, "backsync_outbox_backlog", status="pending") == 1
    assert value(after, "backsync_failed_changes_open") == 1
    assert value(after, "backsync_last_apply_timestamp_seconds") == pytest.approx(now, abs=60)


@pytest.mark.django_db
@pytest.mark.usefixtures("gadget_mapping")
def test_a_rolled_back_batch_is_not_counted(client, monkeypatch):
    # No on_commit execution here: the test transaction never commits, as a failed batch.
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    labels = {"mapping": "gadget", "event": "INSERT", "outcome": "applied"}
    before = value(samples(client), "backsync_changes_applied_total", **labels)
    changes_apply(changes=[gadget_change("rb", "INSERT", 1)])
    assert value(samples(client), "backsync_changes_applied_total", **labels) == before


# --- JSON log lines ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("gadget_mapping")
def test_sync_log_lines_carry_key_sequence_and_event_id(caplog):
    caplog.set_level(logging.DEBUG, logger="syncer")
    changes_apply(
        changes=[
            gadget_change("j1", "INSERT", 41, event_id="ev-ok"),
            gadget_change("j2", "INSERT", 42, image={"Sku": {"S": "j2"}}, event_id="ev-bad"),
        ]
    )
    lines = [
        json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("syncer")
    ]
    assert lines, "no sync log lines"
    by_event = {line["event_id"]: line for line in lines}
    assert {"ev-ok", "ev-bad"} <= set(by_event)
    assert (by_event["ev-ok"]["key"], str(by_event["ev-ok"]["sequence"])) == ("j1", "41")
    assert (by_event["ev-bad"]["key"], str(by_event["ev-bad"]["sequence"])) == ("j2", "42")
    assert by_event["ev-bad"]["level"] == "WARNING"
    for line in lines:
        assert {"key", "sequence", "event_id", "time", "message"} <= set(line)


def test_json_formatter_on_other_loggers_keeps_extras_only():
    record = logging.LogRecord("django.request", logging.INFO, "f", 1, "hi %s", ("x",), None)
    record.status_code = 200
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hi x" and line["status_code"] == 200
    assert "key" not in line


# --- worker-side metrics reach /metrics (multiprocess mode) -------------------------------------


@pytest.fixture
def multiproc_dir(tmp_path):
    path = tmp_path / "prometheus"
    path.mkdir()
    return path


@pytest.fixture
def stack_env(stack_env, multiproc_dir):
    # Worker and relay write their metrics where this test's /metrics reads them.
    return {**stack_env, MULTIPROC_ENV: str(multiproc_dir), "LOG_JSON": "true"}


@pytest.mark.e2e
def test_worker_and_relay_metrics_reach_the_endpoint(
    client, worker, relay, multiproc_dir, monkeypatch
):
    monkeypatch.setenv(MULTIPROC_ENV, str(multiproc_dir))
    ddb = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    for i in range(5):
        ddb.put_item(
            TableName="chef",
            Item={"ChefId": {"S": f"M#{i}"}, "firstName": {"S": "M"}, "lastName": {"S": str(i)}},
        )
    applied = {"mapping": "chef", "event": "INSERT", "outcome": "applied"}
    data = wait_until(
        lambda: (
            (d := samples(client))
            and value(d, "backsync_changes_applied_total", **applied) >= 5
            # Each apply counts, then observes its lag: a scrape can fall in between.
            and value(d, "backsync_sync_lag_seconds_count", mapping="chef") >= 5
            and d
        ),
        what="the worker's applies and lags in /metrics",
    )
    assert value(data, "backsync_relay_records_total", table="chef") >= 5
    assert value(data, "backsync_relay_batches_total", table="chef") >= 1
    # With LOG_JSON the relay's sync lines (-v 2: debug) are JSON with the fields present.
    relay_lines = [
        json.loads(line)
        for line in relay.log_path.read_text().splitlines()
        if line.startswith('{"') and '"logger": "syncer.local.relay"' in line
    ]
    assert relay_lines, "no JSON sync lines from the relay"
    assert all({"key", "sequence", "event_id"} <= set(line) for line in relay_lines)
    assert any(line["sequence"] for line in relay_lines)


@pytest.mark.parametrize("internals", [True, False])
def test_many_observations_of_one_value_equal_that_many_observes(internals):
    """The apply observes a batch's lags as value -> count; the histogram must read as if
    each had been observed alone, with prometheus-client's internals or without them."""
    from prometheus_client import CollectorRegistry, Histogram

    from syncer.ops import metrics

    def histogram(registry):
        return Histogram("lag", "x", ["m"], buckets=(0.1, 1, 5), registry=registry)

    one_by_one, many = CollectorRegistry(), CollectorRegistry()
    single, batched = histogram(one_by_one).labels(m="a"), histogram(many).labels(m="a")
    for value, count in ((0.05, 3), (0.7, 2), (3.0, 4), (99.0, 1)):
        for _ in range(count):
            single.observe(value)
        # Without the internals (another prometheus-client), only observe() is there.
        target = batched if internals else SimpleNamespace(observe=batched.observe)
        metrics._observe_many(target, value, count)

    def samples(registry):
        return sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        )

    assert samples(many) == samples(one_by_one)
    assert ("lag_count", (("m", "a"),), 10.0) in samples(many)
