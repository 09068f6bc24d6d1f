"""Scale-out: N worker processes apply disjoint FIFO groups at once against one MariaDB.

The changes of bench/apply_throughput.py (INSERT / MODIFY / REMOVE with redeliveries, in
stream order) are packed as the stream handler packs them (`syncer.pipeline.stream.handler.pack`:
relay batches cut into one message per FIFO group). In production SQS hands each group to
one consumer at a time, so at most `groups` workers apply at once; here worker i of N takes
the groups i, i+N, ... and applies its messages in stream order with `changes_apply`, each
worker in its own process with its own connection, all starting together.

Two tables:

- **scale-out**: N = 1, 2, 4, 8 (`--workers`) at each `--rtt-ms` (0: loopback; 1: a
  delaying proxy per worker, a process of its own, adds 1 ms to every statement, as a
  network to Aurora does),
  with `--groups` 8 and `--relay-batch` 200 (about 25 changes a message, the production
  shape). Reports changes/s, the efficiency rate(N) / (N x rate(1)) and where the CPU went
  during the run: MariaDB's server process, the workers, and the
  whole machine (other processes included), so the first resource to saturate shows.
- **FIFO groups**: `SYNC_MESSAGE_GROUPS` 4, 16, 64 (`--sweep-groups`) with relay batches of
  100 and 1,000 (`--sweep-batches`): changes per message, and the rate of 1 worker and of
  min(`--sweep-workers`, groups) workers at `--sweep-rtt-ms`.

Every run starts from empty tables and must leave exactly the stream's final state, or the
bench stops.

Run: `python bench/scale_out.py` (see --help); `make bench` runs it with defaults.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.apply_throughput import (  # noqa: E402
    changes_generate,
    messages_pack_groups,
    plan_writes,
    table_rows,
    tables_clear,
)

# --- the worker process -------------------------------------------------------------------

# Per message: room for deadlock storms, bounded so a broken run ends (the worker retries
# transient errors without limit).
MAX_ATTEMPTS = 10


def worker_main(database: str, rtt_ms: float, messages: list[list[dict]], ready, go, results):
    """One worker: its own Django connection (through its own delaying proxy when rtt_ms),
    waits for the start, applies its messages in order, reports its times and CPU."""
    common.django_setup(database=database, migrate=False)
    from syncer.pipeline.apply import TransientApplyError, changes_apply

    proxy = common.DelayProcess(rtt_ms=rtt_ms) if rtt_ms else None
    common.database_route(proxy)
    # Connected and warm before the clock starts: a change in and out on a key of its own
    # (the first apply in a process builds the mapping's statements and caches).
    key = f"Warm#{os.getpid()}"
    for seq, event in enumerate(("INSERT", "REMOVE"), start=1):
        image = {"ChefId": {"S": key}, "firstName": {"S": "W"}, "lastName": {"S": "U"}}
        changes_apply(
            changes=[
                {
                    "id": f"warm-{key}-{seq}",
                    "table": "chef",
                    "event": event,
                    "seq": str(seq),
                    "keys": {"ChefId": {"S": key}},
                    "image": image if event == "INSERT" else None,
                    "ts": time.time(),
                }
            ]
        )
    ready.put(os.getpid())
    go.wait()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.time()
    failed = retries = 0
    rng = random.Random(os.getpid())
    for message in messages:
        for attempt in range(MAX_ATTEMPTS):
            try:
                failed += changes_apply(changes=message).failed
                break
            except TransientApplyError:
                # What the worker's task does (autoretry with jittered backoff): the
                # transaction rolled back whole, so the message is applied again.
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                retries += 1
                time.sleep(rng.uniform(0, 0.01 * 2**attempt))
    end = time.time()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if proxy is not None:
        proxy.stop()
    results.put({"start": start, "end": end, "cpu": cpu, "failed": failed, "retries": retries})


# --- CPU accounting -----------------------------------------------------------------------


def _server_pid() -> int | None:
    """MariaDB's (or MySQL's) server process on this machine, if it runs here."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    return int(entry.name)
            except OSError:
                continue
    return None


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


# --- a run --------------------------------------------------------------------------------


def run(
    *, database: str, packed: list[tuple[str, list[dict]]], workers: int, rtt_ms: float
) -> dict:
    """The packed messages applied by `workers` processes (disjoint groups), from empty
    tables; returns the rate and where the CPU went."""
    groups = sorted({g for g, _ in packed})
    owner = {g: i % workers for i, g in enumerate(groups)}
    shares: list[list[list[dict]]] = [[] for _ in range(workers)]
    for group, changes in packed:
        shares[owner[group]].append(changes)
    shares = [s for s in shares if s]  # fewer groups than workers: the rest would idle

    tables_clear()
    common.database_quiesce()  # the previous run's deletes purged before this one starts
    from django.db import connections

    connections.close_all()  # no connection held across the children's run
    ctx = mp.get_context("spawn")  # children set Django up themselves
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [
        ctx.Process(target=worker_main, args=(database, rtt_ms, share, ready, go, results))
        for share in shares
    ]
    for proc in procs:
        proc.start()
    try:
        for _ in procs:
            _get(ready, procs, timeout=300)
        server = _server_pid()
        server0, machine0 = _proc_cpu(server), _machine_cpu()
        go.set()
        reports = [_get(results, procs, timeout=3600) for _ in procs]
        server1, machine1 = _proc_cpu(server), _machine_cpu()
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    if any(r["failed"] for r in reports):
        raise SystemExit("a worker reported failed changes; the bench data is wrong")
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    total = sum(len(m) for _, m in packed)
    return {
        "workers": len(procs),
        "seconds": wall,
        "rate": total / wall,
        "server_cores": (server1 - server0) / wall if server else None,
        "worker_cores": sum(r["cpu"] for r in reports) / wall,
        "machine_busy": (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1]),
        "retries": sum(r["retries"] for r in reports),
    }


def deadlock_locks(database: str) -> list[str]:
    """The statements and the lock lines (index and table of this database) of MariaDB's
    latest detected deadlock, to say where concurrent applies collided."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW ENGINE INNODB STATUS")
        status = cur.fetchone()[2]
    if "LATEST DETECTED DEADLOCK" not in status:
        return []
    section = status.split("LATEST DETECTED DEADLOCK", 1)[1].split("TRANSACTIONS\n", 1)[0]
    statements = ("INSERT", "DELETE", "UPDATE", "SELECT")
    return sorted(
        {
            line.strip()[:120]
            for line in section.splitlines()
            if ("LOCKS" in line and database in line) or line.startswith(statements)
        }
    )


def best_run(*, repeat: int, expected: dict, **kwargs) -> dict:
    """The fastest of `repeat` runs (other load on the machine only ever slows one down)."""
    best = None
    for _ in range(repeat):
        r = run(**kwargs)
        check(expected)
        if r["retries"]:
            for line in deadlock_locks(kwargs["database"]):
                print(f"  latest deadlock: {line}", flush=True)
        if best is None or r["rate"] > best["rate"]:
            best = r
    return best


def _get(q, procs, *, timeout: float):
    """The next item of a children's queue; stops the bench if a child died instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return q.get(timeout=1)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"a worker died (exit code {dead[0].exitcode})") from None
    raise SystemExit(f"no word from the workers in {timeout:g} s")


def check(expected: dict) -> None:
    if table_rows() != expected:
        raise SystemExit("the workers left a table different from the stream's final state")


def cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --- the bench ----------------------------------------------------------------------------


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.set_defaults(database="backsync_bench_scale")
    p.add_argument("--changes", type=int, default=40_000, help="Changes in the scale-out runs.")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--duplicates", type=float, default=0.05, help="Share of redeliveries.")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--workers", type=int, action="append", help="Repeatable; 1, 2, 4, 8.")
    p.add_argument("--rtt-ms", type=float, action="append", help="Repeatable; 0 and 1.")
    p.add_argument("--groups", type=int, default=8, help="FIFO groups in the scale-out runs.")
    p.add_argument("--relay-batch", type=int, default=200, help="Relay batch (scale-out).")
    p.add_argument("--sweep-groups", type=int, action="append", help="Repeatable; 4, 16, 64.")
    p.add_argument("--sweep-batches", type=int, action="append", help="Repeatable; 100, 1000.")
    p.add_argument("--sweep-changes", type=int, default=10_000, help="Changes per sweep run.")
    p.add_argument("--sweep-workers", type=int, default=4)
    p.add_argument("--sweep-rtt-ms", type=float, default=1.0)
    p.add_argument("--no-sweep", action="store_true", help="Only the scale-out table.")
    p.add_argument("--repeat", type=int, default=1, help="Runs of each point; the best counts.")
    args = p.parse_args()
    workers_list = args.workers or [1, 2, 4, 8]
    rtts = args.rtt_ms or [0.0, 1.0]
    if min(workers_list) < 1 or args.groups < 1 or args.repeat < 1 or any(r < 0 for r in rtts):
        p.error("--workers, --groups and --repeat must be >= 1, --rtt-ms >= 0")
    if 1 not in workers_list:
        workers_list = [1, *workers_list]  # the efficiency is against one worker

    common.database_recreate(args.database)
    try:
        common.django_setup(database=args.database)
        changes = changes_generate(
            total=args.changes, keys=args.keys, seed=args.seed, dup_rate=args.duplicates
        )
        packed = messages_pack_groups(changes, relay_batch=args.relay_batch, groups=args.groups)
        _, expected = plan_writes([m for _, m in packed])
        per_message = len(changes) / len(packed)

        rows, notes = [], []
        for rtt in rtts:
            base = None
            for n in sorted(set(workers_list)):
                r = best_run(
                    repeat=args.repeat,
                    expected=expected,
                    database=args.database,
                    packed=packed,
                    workers=n,
                    rtt_ms=rtt,
                )
                base = base or r["rate"]
                efficiency = r["rate"] / (r["workers"] * base)
                rows.append(
                    (
                        f"{rtt:g}",
                        r["workers"],
                        r["seconds"],
                        r["rate"],
                        f"{efficiency:.2f}",
                        cores(r["server_cores"]),
                        cores(r["worker_cores"]),
                        f"{r['machine_busy']:.0%}",
                        r["retries"],
                    )
                )
                print(rows[-1], flush=True)
                if rtt == 1 and r["workers"] == 4:
                    verdict = "met" if efficiency >= 0.7 else "not met"
                    notes.append(
                        f"efficiency at 4 workers, 1 ms: **{efficiency:.3f}** (target >= 0.7: "
                        f"{verdict})"
                    )
        notes.append(
            f"{len(changes):,} changes over {args.keys:,} keys, {args.groups} FIFO groups, "
            f"relay batch {args.relay_batch}: {len(packed):,} messages, "
            f"{per_message:.1f} changes/message; worker i of N applies groups i, i+N, ...; "
            f"{os.cpu_count()} cores shared with everything else running"
        )
        notes.append(
            "CPU in cores (CPU seconds / wall seconds) during the run: MariaDB's server "
            "process; the workers (Python, MySQLdb; each worker's delaying proxy is a process of "
            "its own when rtt > 0, counted only in machine busy); "
            "machine busy = all cores, every process on the machine; retried messages: "
            "applies rolled back by a transient error (deadlock) and applied again, as the "
            f"worker's task retries them; best of {args.repeat} run(s) per point"
        )
        table = common.table_format(
            [
                "rtt ms",
                "workers",
                "seconds",
                "changes/s",
                "efficiency",
                "MariaDB cores",
                "workers cores",
                "machine busy",
                "retried messages",
            ],
            rows,
        )
        common.results_append(
            title="Scale-out (N workers, disjoint FIFO groups)",
            table=table,
            notes=notes,
            record=not args.no_record,
        )
        if not args.no_sweep:
            sweep(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep_database:
            common.database_drop(args.database)


def sweep(args) -> None:
    """Changes per message and rate against SYNC_MESSAGE_GROUPS and the relay batch."""
    changes = changes_generate(
        total=args.sweep_changes, keys=args.keys, seed=args.seed, dup_rate=args.duplicates
    )
    rows = []
    for batch in args.sweep_batches or [100, 1000]:
        for groups in args.sweep_groups or [4, 16, 64]:
            packed = messages_pack_groups(changes, relay_batch=batch, groups=groups)
            _, expected = plan_writes([m for _, m in packed])
            rates = []
            for n in sorted({1, min(args.sweep_workers, groups)}):
                r = best_run(
                    repeat=args.repeat,
                    expected=expected,
                    database=args.database,
                    packed=packed,
                    workers=n,
                    rtt_ms=args.sweep_rtt_ms,
                )
                rates.append((r["workers"], r["rate"]))
            many = rates[-1]
            rows.append(
                (
                    groups,
                    batch,
                    len(packed),
                    len(changes) / len(packed),
                    rates[0][1],
                    many[0],
                    many[1],
                )
            )
            print(rows[-1], flush=True)
    table = common.table_format(
        [
            "FIFO groups",
            "relay batch",
            "messages",
            "changes/message",
            "changes/s, 1 worker",
            "workers",
            "changes/s, workers",
        ],
        rows,
    )
    notes = [
        f"{len(changes):,} changes over {args.keys:,} keys, {args.sweep_rtt_ms:g} ms added "
        f"to every statement; at most min({args.sweep_workers}, groups) workers, as SQS "
        "gives one group to one consumer at a time"
    ]
    common.results_append(
        title="FIFO groups and relay batch (SYNC_MESSAGE_GROUPS)",
        table=table,
        notes=notes,
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
