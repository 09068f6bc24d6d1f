"""Fault injection: a flow of changes through the real pipeline while processes are
killed, the database link is cut and messages are redelivered; then reconcile must find
no drift, every stream record must be in the apply log (the poison ones exactly the changes
kept as failed), no event applied twice, each key's state at its newest record, and each
item version written to DynamoDB once (tests.stores.assert_synced).

A kill counts as landing mid-flight only when proven so: the worker's probe
(tests/faults/probe.py) showed a batch or publish started and not finished, and after the
kill its work is not committed; for the relay, its log showed records sent to SQS after its
last checkpoint, and after the kill the checkpoint is still before them.

The worker here sees a short SQS visibility timeout and a short retry backoff, so what a
killed worker held comes back (and a retried batch runs again) within a test's patience.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3
import pytest
from django.conf import settings

from syncer.models import OutboxEntry, ShardCheckpoint
from tests.procs import ManagedProcess, relay_argv, wait_until, worker_argv
from tests.stores import assert_synced, dynamo_rows, logged_event_ids, mysql_rows, stream_records

VISIBILITY_TIMEOUT = 6  # seconds; a SIGKILLed worker's messages come back after this
OUTBOX_VISIBILITY_TIMEOUT = 30
PROBE_MODULE = "tests.faults.probe"
APPLY_TASK = "syncer.apply_changes"
PUBLISH_TASK = "syncer.outbox_publish"


# --- watching processes: the worker's task probe, the relay's log ---------------------------


class LogTail:
    """The complete lines appended to a file since the last call."""

    def __init__(self, path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode("utf-8", errors="replace").splitlines()


@dataclass
class Task:
    id: str
    name: str
    payload: str
    began: float
    ended: float | None = None
    state: str = ""


class TaskProbe:
    """Reads the probe file a fault-test worker writes (tests/faults/probe.py)."""

    def __init__(self, path) -> None:
        self.tail = LogTail(path)
        self.runs: list[Task] = []  # every run; a retried task runs again under its id
        self.latest: dict[str, Task] = {}  # the latest run of each task id

    def poll(self) -> TaskProbe:
        for line in self.tail.new_lines():
            at, what, task_id, *rest = line.split(" ", 4)
            if what == "begin":
                self.latest[task_id] = Task(task_id, rest[0], rest[1], float(at))
                self.runs.append(self.latest[task_id])
            elif task_id in self.latest:
                self.latest[task_id].ended, self.latest[task_id].state = float(at), rest[0]
        return self

    def running(self, name: str) -> list[Task]:
        return [t for t in self.poll().latest.values() if t.name == name and t.ended is None]

    def forget_running(self) -> None:
        """After a kill: what was running will never end (a redelivery begins anew)."""
        for task_id in [t.id for t in self.poll().latest.values() if t.ended is None]:
            del self.latest[task_id]


class KillPoints:
    """Fault points along a flow: armed at the given steps and fired at the first step from
    there on where `busy()` holds, so that the flow keeps feeding the pipeline meanwhile (a
    blocking wait could find it drained). `fired` is what each `fire()` returned."""

    def __init__(self, at: set[int], *, busy: Callable[[], object], fire: Callable[[], object]):
        self.at, self.busy, self.fire = at, busy, fire
        self.armed = 0
        self.fired: list = []

    def step(self, n: int) -> None:
        if n in self.at:
            self.armed += 1
        if self.armed and self.busy():
            self.armed -= 1
            self.fired.append(self.fire())

    def assert_all_fired(self) -> None:
        assert self.armed == 0, f"{self.armed} fault(s) never found work in flight"


def kill_mid_task(proc: ManagedProcess, name: str, *, timeout: float = 60) -> bool:
    """SIGKILL the worker as soon as its probe shows a `name` task started and not ended.
    Returns whether the kill is proven to have landed mid-task: the task's work is not
    committed after the kill (an apply batch's events are not in the log, a publish's
    outbox entry is still pending)."""
    running = wait_until(
        lambda: proc.probe.running(name), timeout=timeout, interval=0.01, what=f"{name} running"
    )
    proc.kill()
    proc.probe.poll()
    landed = [t for t in running if t.ended is None]  # ended between the read and the kill?
    proc.probe.forget_running()
    if name == APPLY_TASK:
        logged = logged_event_ids()
        return any(logged.isdisjoint(t.payload.split(",")) for t in landed)
    pending = OutboxEntry.objects.filter(
        pk__in=[int(t.payload) for t in landed], status=OutboxEntry.Status.PENDING
    )
    return pending.exists()


SENT_LINE = re.compile(r"sent \d+ change\(s\) to group \S+ \(seq \d+\.\.(\d+)\)")
CHECKPOINT_LINE = re.compile(r"record\(s\) handed on, checkpoint (\d+)")


class RelayWatch:
    """Follows the relay's log (-v 2): the highest sequence number sent to SQS since its
    last checkpoint line, if any (a batch in flight)."""

    def __init__(self, proc: ManagedProcess) -> None:
        self.tail = LogTail(proc.log_path)
        self.in_flight: int | None = None

    def poll(self) -> int | None:
        for line in self.tail.new_lines():
            if m := SENT_LINE.search(line):
                self.in_flight = max(self.in_flight or 0, int(m.group(1)))
            elif CHECKPOINT_LINE.search(line):
                self.in_flight = None
        return self.in_flight


def kill_relay_mid_batch(proc: ManagedProcess, watch: RelayWatch, *, timeout: float = 60) -> bool:
    """SIGKILL the relay once it has sent part of a batch to SQS and not checkpointed it.
    Returns whether that is proven: after the kill its checkpoint is before what it sent."""
    sent = wait_until(watch.poll, timeout=timeout, interval=0.01, what="a relay batch in flight")
    proc.kill()
    watch.poll()
    watch.in_flight = None  # a restart begins with no batch in flight
    checkpoint = sum(
        int(c or 0) for c in ShardCheckpoint.objects.values_list("sequence_number", flat=True)
    )
    return checkpoint < sent


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
            [*worker_argv(schedule=tmp_path / f"{name}-beat-schedule"), "-I", PROBE_MODULE],
            env={
                **fault_env,
                "BACKSYNC_PROBE_FILE": str(tmp_path / f"{name}-probe.log"),
                **overrides,
            },
            log_dir=tmp_path,
        )
        proc.probe = TaskProbe(tmp_path / f"{name}-probe.log")
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

    def run(
        self,
        on_step: Callable[[int], None] | None = None,
        *,
        more: Callable[[], bool] | None = None,
        max_extra: int = 2000,
    ) -> None:
        """The flow; then, while `more()` holds (a fault still waiting for work in flight:
        a restarted process may miss the last steps), up to `max_extra` ordinary writes."""
        client = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
        rng = random.Random(self.seed)
        fix_at = {p: min(self.total - 1, p + 300) for p in self.poison}
        steps = itertools.chain(
            range(self.total),
            itertools.takewhile(
                lambda _n: more is not None and more(),
                range(self.total, self.total + max_extra),
            ),
        )
        for n in steps:
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


def assert_converged(*, timeout: float = 120) -> dict[str, int]:
    """The stores equal (waited for), then everything tests.stores.assert_synced checks,
    with the flow's poison changes as the expected failed ones."""
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
    poison = {r["eventID"] for r in stream_records() if is_poison(r)}
    assert poison, "the flow wrote no poison change"
    counts = assert_synced(poison=poison)
    assert not any(k.startswith("Poison#") and v[1] == "bad" for k, v in mysql_rows().items())
    return counts
