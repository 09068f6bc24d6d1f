"""End to end: DynamoDB (moto) -> stream -> relay -> SQS FIFO -> celery worker -> MySQL.

Starts its own moto server, scratch database, worker and relay. First measures moto's own
ceiling for the same writes alone (no relay, no worker: the local limit), then writes at a
steady rate for `--duration` seconds per `--rate` and reports the sustained apply rate and
the lag from the stream record's creation time (ApproximateCreationDateTime, ms precision)
to the apply transaction (AppliedBatch.applied_at, taken inside the transaction that
commits the row; the commit follows within the same message, a few ms; each change's lag
is in its batch's entries, to the ms).

Run: `python bench/end_to_end.py` (see --help); `make bench` runs it with defaults.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402


def _client():
    import boto3
    from django.conf import settings

    return boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)


def _write(client, key: str, n: int, rng: random.Random, live: set[str]) -> None:
    if key in live and rng.random() < 0.1:
        client.delete_item(TableName="chef", Key={"ChefId": {"S": key}})
        live.discard(key)
        return
    client.put_item(
        TableName="chef",
        Item={
            "ChefId": {"S": key},
            "firstName": {"S": f"First {n}"},
            "lastName": {"S": key},
        },
    )
    live.add(key)


def moto_ceiling(*, seconds: float, threads: int, keys: int) -> float:
    """Writes per second moto takes when nothing else runs (same item shapes)."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        client, rng, live = _client(), random.Random(i), set()
        n = 0
        while time.monotonic() < stop:
            _write(client, f"Ceil{i}#{rng.randrange(keys):05d}", n, rng, live)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - start)


def steady_write(*, rate: float, seconds: float, prefix: str, keys: int) -> tuple[int, float]:
    """Writes on a fixed schedule (no catch-up bursts); returns (writes, achieved rate)."""
    client, rng, live = _client(), random.Random(prefix), set()
    start = time.monotonic()
    n = 0
    while True:
        due = start + n / rate
        now = time.monotonic()
        if due - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        _write(client, f"{prefix}#{rng.randrange(keys):05d}", n, rng, live)
        n += 1
    return n, n / (time.monotonic() - start)


def logged(prefix: str) -> list[tuple[str, float | None, object]]:
    """(event id, lag in s, applied_at) of each logged change of the prefix's keys, in the
    order the worker applied them (AppliedBatch.entries)."""
    from syncer.models import AppliedBatch

    out = []
    batches = AppliedBatch.objects.filter(entries__text__icontains=f"{prefix}#")
    for batch in batches.order_by("applied_at", "id"):
        for entry in batch.entry_dicts():
            if entry["key"].startswith(f"{prefix}#") and entry["lag"] is not None:
                out.append((entry["event_id"], entry["lag"], batch.applied_at))
    return out


def wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def measure(*, rate: float, prefix: str, args) -> tuple[tuple, str]:
    """Write at `rate` for the duration, wait for every change in MySQL, compute lags."""
    writes, achieved = steady_write(rate=rate, seconds=args.duration, prefix=prefix, keys=args.keys)
    written_at = time.monotonic()
    wait_for(
        lambda: len({event_id for event_id, _, _ in logged(prefix)}) >= writes,
        timeout=max(120.0, args.duration * 2),
        what=f"{writes} changes at {rate:g}/s",
    )
    drain = time.monotonic() - written_at
    log = logged(prefix)
    first: dict[str, float] = {}  # the first application of each change (not redeliveries)
    for event_id, lag, _ in log:
        if event_id not in first:
            first[event_id] = lag
    lags = list(first.values())
    # From the first stream record's time to the last apply.
    span = max(a for _, _, a in log).timestamp() - min(a.timestamp() - g for _, g, a in log)
    p99 = common.percentile(lags, 99)
    row = (
        f"{rate:g}",
        achieved,
        len(first) / span,
        common.percentile(lags, 50),
        common.percentile(lags, 95),
        p99,
        max(lags),
        drain,
    )
    note = (
        f"rate {rate:g}/s: {writes:,} writes in {args.duration:g} s; "
        f"{len(log) - len(first)} duplicate applications; "
        f"p99 lag {'under' if p99 < 1 else 'OVER'} 1 s"
    )
    return row, note


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, action="append", help="Writes/s; repeatable (50, 100).")
    p.add_argument("--duration", type=float, default=60.0, help="Seconds of writes per rate.")
    p.add_argument("--keys", type=int, default=2_000)
    p.add_argument("--ceiling-seconds", type=float, default=10.0)
    p.add_argument("--ceiling-threads", type=int, default=4)
    p.add_argument(
        "--message-groups",
        type=int,
        action="append",
        help="SYNC_MESSAGE_GROUPS for the relay; repeatable (default 4, the setting, and 1).",
    )
    p.add_argument("--relay-batch", type=int, default=100, help="Relay batch size (records).")
    p.add_argument(
        "--batching-window",
        type=float,
        default=0.2,
        help="Relay batching window (s): a batch that is not full waits up to this long.",
    )
    args = p.parse_args()
    rates = args.rate or [100.0]
    group_counts = args.message_groups or [4, 1]

    from tests.plugins.aws import MotoServer, free_port
    from tests.procs import VENV_BIN, ManagedProcess

    logs = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    moto = MotoServer(free_port(), logs / "moto.log")
    moto.start()
    procs: list[ManagedProcess] = []
    common.database_recreate(args.database)
    try:
        env = common.django_setup(database=args.database, aws_endpoint=moto.url)
        from django.conf import settings

        from syncer.local.provision import aws_resources_ensure

        aws_resources_ensure()
        ceiling_1 = moto_ceiling(seconds=args.ceiling_seconds, threads=1, keys=args.keys)
        ceiling_n = moto_ceiling(
            seconds=args.ceiling_seconds, threads=args.ceiling_threads, keys=args.keys
        )
        print(
            f"moto alone: {ceiling_1:.0f} writes/s (1 client), "
            f"{ceiling_n:.0f} ({args.ceiling_threads} threads)"
        )
        moto.reset()  # a clean stream and queues for the measured runs
        aws_resources_ensure()

        queues = ",".join(
            (settings.SYNC_QUEUE_NAME, settings.OUTBOX_QUEUE_NAME, settings.RECONCILE_QUEUE_NAME)
        )
        worker = ManagedProcess(
            "worker",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                queues,
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "warning",
            ],
            env=env,
            log_dir=logs,
        )
        procs.append(worker.start())
        rows, notes = [], []
        for groups in group_counts:
            relay = ManagedProcess(
                f"relay-g{groups}",
                [
                    sys.executable,
                    "manage.py",
                    "relay_stream",
                    "--batch-size",
                    str(args.relay_batch),
                    "--batching-window",
                    str(args.batching_window),
                    "--poll-interval",
                    "0.2",
                ],
                env={**env, "SYNC_MESSAGE_GROUPS": str(groups)},
                log_dir=logs,
            )
            procs.append(relay.start())
            # Warm up: the first change through proves every process is ready.
            _client().put_item(
                TableName="chef",
                Item={
                    "ChefId": {"S": f"Warm{groups}#0"},
                    "firstName": {"S": "W"},
                    "lastName": {"S": "U"},
                },
            )
            wait_for(
                lambda g=groups: logged(f"Warm{g}"),
                timeout=90,
                what="warm-up change",
            )
            for rate in rates:
                row, note = measure(rate=rate, prefix=f"G{groups}R{rate:g}", args=args)
                rows.append((groups, *row))
                notes.append(f"{groups} group(s), {note}")
            relay.stop()
        notes.insert(
            0,
            (
                f"moto alone (the local limit): {ceiling_1:.0f} writes/s with 1 client, "
                f"{ceiling_n:.0f} with {args.ceiling_threads} threads; worker concurrency 2, "
                f"relay batch {args.relay_batch}, batching window {args.batching_window:g} s, "
                "poll interval 0.2 s; worker SQS "
                f"long-poll wait {os.environ.get('SQS_WAIT_TIME_SECONDS', '0')} s, polling "
                f"interval {os.environ.get('SQS_POLLING_INTERVAL', '0.05')} s "
                "(SQS_WAIT_TIME_SECONDS, SQS_POLLING_INTERVAL)"
            ),
        )
        table = common.table_format(
            [
                "FIFO groups",
                "target writes/s",
                "achieved writes/s",
                "applied/s",
                "lag p50 s",
                "lag p95 s",
                "lag p99 s",
                "lag max s",
                "drain after stop s",
            ],
            rows,
        )
        common.results_append(
            title="End to end (moto)", table=table, notes=notes, record=not args.no_record
        )
    finally:
        for proc in procs:
            proc.stop()
        moto.stop()
        if not args.keep_database:
            common.database_drop(args.database)
        print(f"(process logs in {logs})")


if __name__ == "__main__":
    main()
