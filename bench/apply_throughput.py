"""Apply throughput: the apply service against the MySQL floor and a naive sync.

50,000 mixed changes (INSERT / MODIFY / REMOVE over 10,000 keys, with redelivered
duplicates) in stream order are cut the way the worker really receives them: relay batches
of 100 records, each packed by the stream handler into one message per FIFO group (4 groups
by default, so about 25 changes per task; `--groups 1` gives 100 per task). Then, each from
an empty table, over the same Django connection:

- apply: `syncer.apply.changes_apply(changes=message)` per message (guard, tombstones,
  change log, one transaction per message);
- raw:   the floor of what MySQL can do for the same effect: per message, one multi-row
  `INSERT ... ON DUPLICATE KEY UPDATE` of the rows the apply service wrote and one
  `DELETE ... IN (...)` of the keys it removed, in one transaction (no bookkeeping);
- naive: one ORM `save()` or `delete()` per change, each in its own transaction (what a
  sync without batching does; it also has no guard, so duplicates can leave stale rows).

For scale it also runs the floor of any apply that keeps DESIGN.md's invariants 2 and 5
(per-key sequence guard with tombstones, kept in the sync's own table, not on the legacy
row): `guarded floor` = raw plus the same multi-row key-state upsert the apply sends
(RETURNING the sequence found), written over the same connection, without parsing,
validation or change log. The target's raw ratio cannot exceed guarded floor / raw.

Run: `python bench/apply_throughput.py` (see --help); `make bench` runs it with defaults.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

SEQ_BASE = 10**20  # stream sequence numbers are ~21-digit decimals


def changes_generate(*, total: int, keys: int, seed: int, dup_rate: float) -> list[dict]:
    """Stream-ordered change messages (syncer/changes.py format) with redeliveries."""
    rng = random.Random(seed)
    live: set[str] = set()
    out: list[dict] = []
    now = time.time()
    n = 0
    while len(out) < total:
        if out and rng.random() < dup_rate:
            # At-least-once delivery: an earlier change (possibly long superseded) comes again.
            out.append(out[max(0, len(out) - rng.randint(1, 2_000))])
            continue
        key = f"Key#{rng.randrange(keys):05d}"
        n += 1
        if key in live and rng.random() < 0.15:
            event, image = "REMOVE", None
            live.discard(key)
        else:
            event = "MODIFY" if key in live else "INSERT"
            live.add(key)
            image = {
                "ChefId": {"S": key},
                "firstName": {"S": f"First {n}"},
                "lastName": {"S": f"Last {key}"},
                "version": {"N": str(n)},
            }
        out.append(
            {
                "id": f"ev-{n:08d}",
                "table": "chef",
                "event": event,
                "seq": str(SEQ_BASE + n),
                "keys": {"ChefId": {"S": key}},
                "image": image,
                "ts": now,
            }
        )
    return out


def messages_pack(changes: list[dict], *, relay_batch: int, groups: int) -> list[list[dict]]:
    """What the worker receives: relay batches split into one message per FIFO group."""
    from syncer.stream_handler import group_id_for

    messages: list[list[dict]] = []
    for start in range(0, len(changes), relay_batch):
        by_group: dict[str, list[dict]] = {}
        for change in changes[start : start + relay_batch]:
            by_group.setdefault(group_id_for(change, groups), []).append(change)
        messages.extend(by_group.values())
    return messages


def newest_per_key(message: list[dict]) -> dict[str, dict]:
    newest: dict[str, dict] = {}
    for c in message:
        key = c["keys"]["ChefId"]["S"]
        if key not in newest or int(c["seq"]) > int(newest[key]["seq"]):
            newest[key] = c
    return newest


def plan_writes(messages: list[list[dict]]) -> tuple[list[tuple[list, list]], dict]:
    """Per message, the rows the guarded apply writes and the keys it removes (simulated
    outside the timing), and the final expected table."""
    last: dict[str, int] = {}
    final: dict[str, tuple[str, str]] = {}
    plan = []
    for message in messages:
        newest = newest_per_key(message)
        upserts, removes = [], []
        for key in sorted(newest):
            c = newest[key]
            if int(c["seq"]) <= last.get(key, 0):
                continue
            last[key] = int(c["seq"])
            if c["event"] == "REMOVE":
                removes.append(key)
                final.pop(key, None)
            else:
                row = (key, c["image"]["firstName"]["S"], c["image"]["lastName"]["S"])
                upserts.append(row)
                final[key] = row[1:]
        plan.append((upserts, removes))
    return plan, final


def tables_clear() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for table in (
            "cheftable",
            "syncer_keystate",
            "syncer_appliedchange",
            "syncer_failedchange",
        ):
            cur.execute(f"DELETE FROM {table}")


def table_rows() -> dict[str, tuple[str, str]]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, cheffirst, cheflast FROM cheftable")
        return {k: (f, last) for k, f, last in cur.fetchall()}


def run_apply(messages: list[list[dict]]) -> float:
    from syncer.apply import changes_apply

    tables_clear()
    failed = 0
    with common.timed() as t:
        for message in messages:
            failed += changes_apply(changes=message).failed
    if failed:
        raise SystemExit(f"apply reported {failed} failed changes; the bench data is wrong")
    return t[0]


def rows_write(cur, upserts: list[tuple], removes: list[str]) -> None:
    """The floor's data write for one message: one multi-row upsert, one DELETE ... IN."""
    if upserts:
        values = ", ".join(["(%s, %s, %s)"] * len(upserts))
        cur.execute(
            "INSERT INTO cheftable (chef_id, cheffirst, cheflast) VALUES "
            + values
            + " ON DUPLICATE KEY UPDATE cheffirst = VALUES(cheffirst),"
            " cheflast = VALUES(cheflast)",
            [v for row in upserts for v in row],
        )
    if removes:
        cur.execute(
            "DELETE FROM cheftable WHERE chef_id IN (" + ", ".join(["%s"] * len(removes)) + ")",
            removes,
        )


def run_raw(plan: list[tuple[list, list]]) -> float:
    from django.db import connection, transaction

    tables_clear()
    with common.timed() as t:
        for upserts, removes in plan:
            with transaction.atomic(), connection.cursor() as cur:
                rows_write(cur, upserts, removes)
    return t[0]


def guard_rows(messages: list[list[dict]]) -> list[list[tuple]]:
    """Per message, the key-state rows the apply's guard upsert writes (newest per key)."""
    from django.utils import timezone

    now = str(timezone.now().replace(tzinfo=None))
    out = []
    for message in messages:
        newest = newest_per_key(message)
        rows = []
        for key in sorted(newest):
            c = newest[key]
            version = int(c["image"]["version"]["N"]) if c["image"] else None
            removed = c["event"] == "REMOVE"
            rows.append(("chef", now, key, int(c["seq"]), None, removed, version, now))
        out.append(rows)
    return out


def run_guarded_floor(plan: list[tuple[list, list]], guards: list[list[tuple]]) -> float:
    from django.db import connection, transaction

    from syncer.apply import _STATE_COLUMNS, _guard_tail, _insert_head
    from syncer.models import KeyState

    head = _insert_head(KeyState._meta.db_table, _STATE_COLUMNS)
    tail = _guard_tail()
    tables_clear()
    with common.timed() as t:
        for (upserts, removes), guard in zip(plan, guards, strict=True):
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute(
                    head + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(guard)) + tail,
                    [v for row in guard for v in row],
                )
                cur.fetchall()
                rows_write(cur, upserts, removes)
    return t[0]


def run_naive(changes: list[dict]) -> float:
    from django.db import transaction

    from chefs.models import Chef

    tables_clear()
    with common.timed() as t:
        for c in changes:
            key = c["keys"]["ChefId"]["S"]
            with transaction.atomic():
                if c["event"] == "REMOVE":
                    Chef.objects.filter(chef_id=key).delete()
                    continue
                chef = Chef.objects.filter(chef_id=key).first() or Chef(chef_id=key)
                chef.first_name = c["image"]["firstName"]["S"]
                chef.last_name = c["image"]["lastName"]["S"]
                chef.save()
    return t[0]


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--changes", type=int, default=50_000)
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--duplicates", type=float, default=0.05, help="Share of redeliveries.")
    p.add_argument("--relay-batch", type=int, default=100, help="Relay batch size (records).")
    p.add_argument(
        "--groups",
        type=int,
        action="append",
        help="FIFO groups per table (messages per relay batch); repeatable. Default: 4 and 1.",
    )
    p.add_argument("--naive-changes", type=int, default=None, help="Run naive on a prefix.")
    p.add_argument("--seed", type=int, default=8)
    args = p.parse_args()
    groups_list = args.groups or [4, 1]

    common.database_recreate(args.database)
    try:
        common.django_setup(database=args.database)
        changes = changes_generate(
            total=args.changes, keys=args.keys, seed=args.seed, dup_rate=args.duplicates
        )
        counts = {e: sum(c["event"] == e for c in changes) for e in ("INSERT", "MODIFY", "REMOVE")}
        dups = len(changes) - len({c["id"] for c in changes})
        print(f"{len(changes):,} changes over {args.keys:,} keys: {counts}, {dups:,} redelivered")

        rows = []
        notes = []
        for groups in groups_list:
            messages = messages_pack(changes, relay_batch=args.relay_batch, groups=groups)
            plan, expected = plan_writes(messages)
            size = len(changes) / len(messages)
            apply_s = run_apply(messages)
            if table_rows() != expected:
                raise SystemExit("apply left a table different from the expected final state")
            raw_s = run_raw(plan)
            if table_rows() != expected:
                raise SystemExit("raw upsert left a different table; the plan is wrong")
            floor_s = run_guarded_floor(plan, guard_rows(messages))
            if table_rows() != expected:
                raise SystemExit("guarded floor left a different table; the plan is wrong")
            label = f"{groups} group(s), {size:.0f} changes/message"
            n = len(changes)
            rows.append((f"apply ({label})", n, apply_s, n / apply_s, ""))
            rows.append((f"raw upsert ({label})", n, raw_s, n / raw_s, ""))
            rows.append((f"guarded floor ({label})", n, floor_s, n / floor_s, ""))
            notes.append(
                f"{label}: apply / raw upsert = {raw_s / apply_s:.2f} (target >= 0.5); "
                f"guarded floor / raw upsert = {raw_s / floor_s:.2f}; "
                f"apply / guarded floor = {floor_s / apply_s:.2f}"
            )

        naive_changes = changes[: args.naive_changes] if args.naive_changes else changes
        naive_s = run_naive(naive_changes)
        wrong = sum(1 for k, v in table_rows().items() if expected.get(k) != v) + len(
            set(expected) - set(table_rows())
        )
        naive_rate = len(naive_changes) / naive_s
        rows.append(
            ("naive save()/delete() per change", len(naive_changes), naive_s, naive_rate, wrong)
        )
        for label, _, _secs, rate, _ in rows[:-1:3]:
            notes.append(f"{label}: apply / naive = {rate / naive_rate:.1f}x (target >= 10x)")
        if not args.naive_changes:
            notes.append(
                f"naive left {wrong} row(s) different from the stream's final state "
                "(no sequence guard: redelivered old changes overwrite newer ones)"
            )
        notes.append(
            f"{len(changes):,} changes ({counts['INSERT']:,} INSERT, {counts['MODIFY']:,} "
            f"MODIFY, {counts['REMOVE']:,} REMOVE; {dups:,} redeliveries) over "
            f"{args.keys:,} keys; relay batch {args.relay_batch}"
        )
        table = common.table_format(["path", "changes", "seconds", "changes/s", "wrong rows"], rows)
        common.results_append(
            title="Apply throughput", table=table, notes=notes, record=not args.no_record
        )
    finally:
        if not args.keep_database:
            from django.db import connections

            connections.close_all()
            common.database_drop(args.database)


if __name__ == "__main__":
    main()
