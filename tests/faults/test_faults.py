"""Fault injection during a flow of 2,000 changes (see conftest.py for what must hold)."""

from __future__ import annotations

import base64
import json
import random
import re
import threading
import time

import boto3
import pytest
from django.conf import settings
from django.db import connection

from chefs.models import Chef
from chefs.services import chef_create, chef_delete, chef_update
from syncer.models import AppliedChange, FailedChange, OutboxEntry, ShardCheckpoint
from tests.faults.conftest import VISIBILITY_TIMEOUT, ChangeFlow, assert_converged
from tests.faults.proxy import TcpProxy
from tests.procs import wait_until

pytestmark = pytest.mark.faults

TASK_LINE = re.compile(r"Task syncer\.apply_changes\[([0-9a-f-]+)\] (received|succeeded)")


def applied() -> int:
    return AppliedChange.objects.count()


def kill_while_busy(proc, *, timeout: float = 60) -> None:
    """SIGKILL once the process has just committed work, so it is likely mid-batch."""
    before = applied()
    wait_until(lambda: applied() > before, timeout=timeout, interval=0.05, what="work")
    proc.kill()


def test_worker_sigkilled_five_times(fault_worker, fault_relay):
    kills_at = {300, 600, 900, 1200, 1500}

    def step(n: int) -> None:
        if n in kills_at:
            kill_while_busy(fault_worker)
            fault_worker.start()

    ChangeFlow().run(step)
    counts = assert_converged(timeout=180)
    assert fault_worker.starts == 6
    assert counts["applications"] >= counts["records"] - 2  # the two poison changes


def test_relay_sigkilled_mid_batch(fault_worker, fault_relay):
    def relayed() -> int:
        return sum(ShardCheckpoint.objects.values_list("records_total", flat=True))

    def step(n: int) -> None:
        if n in (500, 1000, 1500):
            before = relayed()
            wait_until(lambda: relayed() > before, timeout=60, interval=0.05, what="relaying")
            fault_relay.kill()  # between reading, sending and checkpointing a batch
            fault_relay.start()

    ChangeFlow(seed=9).run(step)
    assert_converged(timeout=180)
    log = fault_relay.log_path.read_text()
    assert log.count("resuming after") == 3  # each restart went on from its checkpoint


def test_mysql_link_cut_for_20_seconds(make_worker, fault_relay):
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 3306)).start()
    worker = make_worker(DATABASE_URL=f"mysql://root@127.0.0.1:{proxy.port}/{db['NAME']}").start()
    restored = threading.Event()
    timer = None

    def step(n: int) -> None:
        nonlocal timer
        if n == 600:
            kill_before = applied()
            wait_until(lambda: applied() > kill_before, timeout=60, what="worker applying")
            proxy.cut()
            # Checked here, inside the cut, whatever the speed of the rest of the flow.
            time.sleep(1)  # transactions in flight at the cut end (or fail) first
            cut_rows = applied()
            time.sleep(3)
            assert applied() == cut_rows, "nothing reaches MySQL through a cut link"
            timer = threading.Timer(16, lambda: (proxy.restore(), restored.set()))
            timer.start()

    try:
        ChangeFlow(seed=10).run(step)
        assert restored.wait(40)
        assert_converged(timeout=180)
    finally:
        if timer:
            timer.cancel()
        proxy.stop()
    log = worker.log_path.read_text()
    assert "TransientApplyError" in log  # batches failed while cut and were retried


def test_sqs_redelivers_what_a_dead_consumer_held(make_worker, fault_relay):
    # The flow is queued first, so there is a deep queue to hold messages from.
    ChangeFlow(seed=11).run()
    wait_until(
        lambda: sum(ShardCheckpoint.objects.values_list("records_total", flat=True)) >= 2000,
        timeout=60,
        what="everything relayed",
    )
    # A consumer takes messages and dies without deleting them: what a SIGKILLed worker
    # leaves behind, made deterministic (killing a worker while it holds a message is a
    # race the five-kill test runs). FIFO: their groups are blocked until they come back.
    sqs = boto3.client("sqs", endpoint_url=settings.AWS_ENDPOINT_URL)
    got = sqs.receive_message(QueueUrl=settings.SYNC_QUEUE_URL, MaxNumberOfMessages=10)
    held = {json.loads(base64.b64decode(m["Body"]))["headers"]["id"] for m in got["Messages"]}
    assert held
    held_at = time.monotonic()

    final = make_worker("worker-final").start()
    assert_converged(timeout=180)
    redelivered = {
        t for t, what in TASK_LINE.findall(final.log_path.read_text()) if what == "received"
    }
    assert held <= redelivered  # SQS gave back every message the dead consumer held
    assert time.monotonic() - held_at >= VISIBILITY_TIMEOUT


def test_poison_changes_among_good_ones(fault_worker, fault_relay):
    # Two poison changes side by side (same relay batch) and two more on their own.
    ChangeFlow(seed=12, poison=(100, 101, 900, 1700)).run()
    assert_converged(timeout=120)
    failed = list(FailedChange.objects.all())
    assert len(failed) == 4
    assert {f.key for f in failed} == {"Poison#100", "Poison#101", "Poison#900", "Poison#1700"}
    assert all("expected type S, got N" in f.error for f in failed)


def test_outbox_publisher_killed_mid_publish(make_worker, fault_relay):
    worker = make_worker().start()
    rng = random.Random(13)
    legacy_writes = 0

    def legacy_write(n: int) -> None:
        nonlocal legacy_writes
        mine = list(Chef.objects.filter(last_name__startswith="Legacy"))
        roll = rng.random()
        if roll < 0.5 or not mine:
            chef_create(first_name=f"L{n}", last_name=f"Legacy{n}")
        elif roll < 0.85:
            chef_update(chef=rng.choice(mine), first_name=f"E{n}")
        else:
            chef_delete(chef=rng.choice(mine))
        legacy_writes += 1

    def step(n: int) -> None:
        if n % 9 == 0:
            legacy_write(n)
        if n in (300, 800, 1300):
            legacy_write(n)  # so that a publish is pending when the worker dies
            wait_until(
                lambda: OutboxEntry.objects.filter(status="pending").exists(),
                timeout=30,
                what="a publish in flight",
            )
            kill_while_busy(worker)
            # Legacy writes go on while the publisher is down; their tasks wait in SQS.
            for extra in range(5):
                legacy_write(n * 10 + extra)
            worker.start()

    # 1,800 DynamoDB writes and about 215 legacy ones.
    ChangeFlow(seed=13, total=1800).run(step)
    assert legacy_writes >= 200
    wait_until(
        lambda: not OutboxEntry.objects.filter(status="pending").exists(),
        timeout=120,
        interval=1,
        what="outbox drained",
    )
    assert not OutboxEntry.objects.filter(status="failed").exists()
    assert_converged(timeout=120)
    assert Chef.objects.filter(last_name__startswith="Legacy").count() > 0
