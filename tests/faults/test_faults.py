"""Fault injection during a flow of 2,000 changes (see conftest.py for what must hold)."""

from __future__ import annotations

import base64
import json
import random
import threading
import time

import boto3
import pytest
from django.conf import settings
from django.db import connection

from chefs.models import Chef
from chefs.services import chef_create, chef_delete, chef_update
from syncer.models import FailedChange, OutboxEntry, ShardCheckpoint
from tests.conftest import database_url
from tests.faults.conftest import (
    APPLY_TASK,
    PUBLISH_TASK,
    ChangeFlow,
    KillPoints,
    RelayWatch,
    assert_converged,
    kill_mid_task,
    kill_relay_mid_batch,
)
from tests.faults.proxy import TcpProxy
from tests.procs import wait_until

pytestmark = pytest.mark.faults

HELD_FOR = 12  # seconds the dead consumer's messages stay invisible


def test_worker_sigkilled_five_times(fault_worker, fault_relay):
    def kill() -> bool:
        landed = kill_mid_task(fault_worker, APPLY_TASK, timeout=5)
        fault_worker.start()
        return landed

    kills = KillPoints(
        {300, 600, 900, 1200, 1500}, busy=lambda: fault_worker.probe.running(APPLY_TASK), fire=kill
    )
    ChangeFlow().run(kills.step, more=lambda: kills.armed > 0)
    kills.assert_all_fired()
    assert_converged(timeout=180)
    mid_batch = sum(kills.fired)
    print(f"worker kills that landed mid-batch: {mid_batch} of {len(kills.fired)}")
    assert mid_batch >= 1, "no kill was proven to land in the middle of a batch"


def test_relay_sigkilled_mid_batch(fault_worker, fault_relay):
    watch = RelayWatch(fault_relay)

    def kill() -> bool:
        landed = kill_relay_mid_batch(fault_relay, watch, timeout=5)
        fault_relay.start()
        return landed

    kills = KillPoints({500, 1000, 1500}, busy=watch.poll, fire=kill)
    ChangeFlow(seed=9).run(kills.step, more=lambda: kills.armed > 0)
    kills.assert_all_fired()
    assert_converged(timeout=180)
    mid_batch = sum(kills.fired)
    print(f"relay kills that landed mid-batch: {mid_batch} of {len(kills.fired)}")
    assert mid_batch >= 1, "no kill was proven to land between a send and its checkpoint"
    log = fault_relay.log_path.read_text()
    assert log.count("resuming after") == 3  # each restart went on from its checkpoint


def test_mysql_link_cut_for_20_seconds(make_worker, fault_relay):
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 3306)).start()
    worker = make_worker(
        DATABASE_URL=database_url({**db, "HOST": "127.0.0.1", "PORT": proxy.port})
    ).start()
    restored = threading.Event()
    times: dict[str, float] = {}
    timers: list[threading.Timer] = []

    def restore() -> None:
        times["restored"] = time.time()
        proxy.restore()
        restored.set()

    def cut() -> None:  # while a batch is being applied
        times["cut"] = time.time()
        proxy.cut()
        timers.append(threading.Timer(20, restore))
        timers[0].start()

    cuts = KillPoints({600}, busy=lambda: worker.probe.running(APPLY_TASK), fire=cut)
    try:
        ChangeFlow(seed=10).run(cuts.step, more=lambda: cuts.armed > 0)
        cuts.assert_all_fired()
        assert restored.wait(40)
        assert_converged(timeout=180)
    finally:
        for timer in timers:
            timer.cancel()
        proxy.stop()
    tasks = [t for t in worker.probe.poll().runs if t.name == APPLY_TASK]
    during = [t for t in tasks if times["cut"] < t.began and (t.ended or 0) < times["restored"]]
    # Batches started while cut ended in a retry, and none of them reached MySQL.
    assert any(t.state == "RETRY" for t in during), "no batch failed while the link was cut"
    assert not [t for t in during if t.state == "SUCCESS" and t.ended], "applied while cut"


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
    # They are held longer than the queue's own timeout, so that the worker started next is
    # surely consuming (beat's sweeps) before they come back.
    sqs = boto3.client("sqs", endpoint_url=settings.AWS_ENDPOINT_URL)
    got = sqs.receive_message(
        QueueUrl=settings.SYNC_QUEUE_URL, MaxNumberOfMessages=10, VisibilityTimeout=HELD_FOR
    )
    held_at = time.time()
    held = {json.loads(base64.b64decode(m["Body"]))["headers"]["id"] for m in got["Messages"]}
    assert held

    final = make_worker("worker-final").start()
    assert_converged(timeout=180)
    runs = final.probe.poll().runs
    assert held <= {t.id for t in runs}  # SQS gave back every message the dead consumer held
    first = min(t.began for t in runs)
    assert first < held_at + HELD_FOR, "the worker consumed nothing while they were held"
    came_back = min(t.began for t in runs if t.id in held)
    assert came_back >= held_at + HELD_FOR - 1, "a held message came back before its timeout"


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
    mid_publish = []

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

    def publishing() -> bool:
        return bool(worker.probe.running(PUBLISH_TASK))

    def step(n: int) -> None:
        if n % 9 == 0:
            legacy_write(n)
        if n in (300, 800, 1300):
            # Legacy writes until a publish is caught running (each runs for milliseconds).
            for extra in range(40):
                legacy_write(n * 100 + extra)
                try:
                    wait_until(publishing, timeout=2, interval=0.01, what="a publish running")
                    break
                except AssertionError:
                    continue
            mid_publish.append(kill_mid_task(worker, PUBLISH_TASK, timeout=5))
            # Legacy writes go on while the publisher is down; their tasks wait in SQS.
            for extra in range(50, 55):
                legacy_write(n * 100 + extra)
            worker.start()

    # 1,800 DynamoDB writes and about 215 legacy ones.
    ChangeFlow(seed=13, total=1800).run(step)
    wait_until(
        lambda: not OutboxEntry.objects.filter(status="pending").exists(),
        timeout=120,
        interval=1,
        what="outbox drained",
    )
    assert not OutboxEntry.objects.filter(status="failed").exists()
    assert OutboxEntry.objects.count() == legacy_writes  # one entry per legacy write
    assert_converged(timeout=120)
    assert Chef.objects.filter(last_name__startswith="Legacy").count() > 0
    print(f"publisher kills that landed mid-publish: {sum(mid_publish)} of {len(mid_publish)}")
    assert sum(mid_publish) >= 1, "no kill was proven to land in the middle of a publish"
