"""Capture trigger cost: what the triggers on cheftable (syncer/outbox/capture.py) add to a legacy
write and to an applied change.

Each measurement runs with the triggers and with them dropped, alternately (`--repeats`
times each, which goes first alternating, the fastest run kept), on the same data:

- legacy writes: a plain MySQL client connection (a batch job, not Django), `--writes`
  single-row INSERTs, then an UPDATE and a DELETE of each of those rows by primary key, one
  statement each, committed every `--per-commit` rows (1 = autocommit, as at a SQL prompt:
  then the commit's log flush, which the trigger does not add to, dominates and varies);
  and one `UPDATE` of all the rows in a single statement, then the same marked as the
  sync's (`@backsync_sync = 1`: the trigger skips). With triggers, each written row
  also writes its outbox entry (key-state lookup included: every row is keyed and has its
  key state, as after a sync).
- apply: `changes_apply` over the apply bench's stream (`--changes` over `--keys`, 25
  changes per message). The sync's connection is marked, so the trigger only tests the
  session variable and returns.

Run: `python bench/capture_cost.py` (see --help).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import apply_throughput, common  # noqa: E402


def _plain(database: str):
    import MySQLdb

    return MySQLdb.connect(
        host=common.DEFAULT_DB_HOST,
        port=common.DEFAULT_DB_PORT,
        user="root",
        db=database,
        charset="utf8mb4",
        autocommit=True,
    )


def _clear() -> None:
    from django.db import connection

    from syncer.store.marks import sync_writes_mark

    sync_writes_mark()  # clearing the tables is not a legacy write
    with connection.cursor() as cur:
        for table in ("cheftable", "syncer_keystate", "syncer_outboxentry", "syncer_appliedbatch"):
            cur.execute(f"DELETE FROM {table}")


def _keystates(n: int) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.executemany(
            "INSERT INTO syncer_keystate (mapping, `key`, sequence, deleted, item_version, "
            "applied_at) VALUES ('chef', %s, 1, 0, 1, UTC_TIMESTAMP(6))",
            [(f"Key#{i:06d}",) for i in range(n)],
        )


def run_legacy(database: str, writes: int, per_commit: int) -> dict[str, float]:
    """Seconds per phase for `writes` single-row statements from a plain client."""
    _clear()
    _keystates(writes)
    conn = _plain(database)
    conn.autocommit(per_commit <= 1)
    cur = conn.cursor()
    out: dict[str, float] = {}

    def each(phase: str, sql: str, params: list) -> None:
        with common.timed() as t:
            for n, p in enumerate(params, 1):
                cur.execute(sql, p)
                if per_commit > 1 and n % per_commit == 0:
                    conn.commit()
            conn.commit()
        out[phase] = t[0]

    each(
        "insert",
        "INSERT INTO cheftable (chef_id, cheffirst, cheflast) VALUES (%s, %s, 'Legacy')",
        [(f"Key#{i:06d}", f"F{i}") for i in range(writes)],
    )
    cur.execute("SELECT id FROM cheftable ORDER BY id")
    ids = [(r[0],) for r in cur.fetchall()]
    each("update", "UPDATE cheftable SET cheflast = 'Edited' WHERE id = %s", ids)
    with common.timed() as t:
        cur.execute("UPDATE cheftable SET cheflast = 'Bulk'")
        conn.commit()
    out["bulk update"] = t[0]
    # The same, marked as the sync's: what a skipping trigger costs a row.
    cur.execute("SET @backsync_sync = 1")
    with common.timed() as t:
        cur.execute("UPDATE cheftable SET cheflast = 'Sync'")
        conn.commit()
    out["sync bulk update"] = t[0]
    cur.execute("SET @backsync_sync = NULL")
    each("delete", "DELETE FROM cheftable WHERE id = %s", ids)
    conn.close()
    return out


def run_apply(messages) -> float:
    _clear()
    return apply_throughput.run_apply(messages)


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=5_000, help="Legacy rows written.")
    p.add_argument("--changes", type=int, default=50_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--per-commit", type=int, default=100, help="Rows per commit (1: autocommit).")
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()

    common.database_recreate(args.database)
    try:
        common.django_setup(database=args.database)
        from chefs.mapping import CHEF_MAPPING
        from syncer.outbox.capture import triggers_install, triggers_present, triggers_remove

        changes = apply_throughput.changes_generate(
            total=args.changes, keys=args.keys, seed=8, dup_rate=0.05
        )
        messages = apply_throughput.messages_pack(changes, relay_batch=100, groups=4)
        legacy: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        apply: dict[bool, list[float]] = {True: [], False: []}

        def triggers(on: bool) -> None:
            if on:
                triggers_install(mapping=CHEF_MAPPING)
            else:
                triggers_remove(table="cheftable")
            assert bool(triggers_present(table="cheftable")) == on

        # The apply runs first, apart from the legacy writes: the outbox rows those write
        # and delete leave InnoDB purge work that would land on the next apply run.
        # Alternating which goes first; the fastest run of each is kept (on a shared
        # machine, the least disturbed one).
        orders = [(True, False), (False, True)]
        for n in range(args.repeats):
            for with_triggers in orders[n % 2]:
                triggers(with_triggers)
                apply[with_triggers].append(run_apply(messages))
        for n in range(args.repeats):
            for with_triggers in orders[n % 2]:
                triggers(with_triggers)
                legacy[with_triggers].append(
                    run_legacy(args.database, args.writes, args.per_commit)
                )
        triggers(True)

        rows = []
        notes = []
        for phase, count in (
            ("insert", args.writes),
            ("update", args.writes),
            ("delete", args.writes),
            ("bulk update", args.writes),
            ("sync bulk update", args.writes),
        ):
            on = min(r[phase] for r in legacy[True])
            off = min(r[phase] for r in legacy[False])
            label = ("" if phase.startswith("sync") else "legacy ") + phase
            label += " (one statement)" if "bulk" in phase else ""
            rows.append(
                (label, count, off / count * 1e6, on / count * 1e6, (on - off) / count * 1e6)
            )
        n = len(changes)
        on, off = min(apply[True]), min(apply[False])
        rows.append(
            ("applied change (25/message)", n, off / n * 1e6, on / n * 1e6, (on - off) / n * 1e6)
        )
        notes.append(
            f"apply: {n / off:,.0f} changes/s without triggers, {n / on:,.0f} with "
            f"({(on / off - 1) * 100:+.1f}% time); fastest of {args.repeats} runs each, "
            f"all runs (s) with: {', '.join(f'{x:.1f}' for x in apply[True])}, "
            f"without: {', '.join(f'{x:.1f}' for x in apply[False])}"
        )
        notes.append(
            f"legacy writes: one statement per row from a plain client, {args.per_commit} "
            "row(s) per commit, every row keyed and with its key state; with triggers each "
            "also writes its outbox entry"
        )
        table = common.table_format(
            ["write", "rows", "µs/row without", "µs/row with", "trigger µs/row"], rows
        )
        common.results_append(
            title="Capture trigger cost", table=table, notes=notes, record=not args.no_record
        )
    finally:
        if not args.keep_database:
            common.database_drop(args.database)


if __name__ == "__main__":
    main()
