"""Apply throughput: the apply service against the MySQL floor and a naive sync.

50,000 mixed changes (INSERT / MODIFY / REMOVE over 10,000 keys, with redelivered
duplicates) in stream order are cut the way the worker really receives them: relay batches
of 100 records, each packed by the stream handler into one message per FIFO group (4 groups
by default, so about 25 changes per task; `--groups 1` gives 100 per task). Then, each from
an empty table, over the same Django connection:

- apply: `syncer.pipeline.apply.changes_apply(changes=message)` per message (guard, tombstones,
  change log, one transaction per message);
- raw:   the floor of what MySQL can do for the same effect: per message, one multi-row
  `INSERT ... ON DUPLICATE KEY UPDATE` of the rows the apply service wrote and one
  `DELETE ... IN (...)` of the keys it removed, in one transaction (no bookkeeping);
- naive: one ORM `save()` or `delete()` per change, each in its own transaction (what a
  sync without batching does; it also has no guard, so duplicates can leave stale rows).

For scale it also runs the floor of any apply that keeps DESIGN.md's invariants 2 and 5
(per-key sequence guard with tombstones, kept in the sync's own table, not on the legacy
row): `guarded floor` = raw plus the same multi-row key-state upsert the apply sends and
the locking read-back of the sequences it found, over the same connection, without
parsing, validation or change log. The target's raw ratio cannot exceed guarded floor / raw.

`ORM guarded floor` does what the guarded floor does with Django's ORM instead of
hand-written SQL (select_for_update of the key states, bulk_create / bulk_update of them,
bulk_create(update_conflicts=True) of the rows, a queryset delete): the figure that says
whether the hand-written SQL (syncer/store/sql.py) pays for itself.

Run: `python bench/apply_throughput.py` (see --help); `make bench` runs it with defaults.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

SEQ_BASE = 10**20  # stream sequence numbers are ~21-digit decimals


def changes_generate(*, total: int, keys: int, seed: int, dup_rate: float) -> list[dict]:
    """Stream-ordered change messages (the format of syncer/pipeline/stream/contract.py) with
    redeliveries."""
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


def messages_pack_groups(
    changes: list[dict], *, relay_batch: int, groups: int
) -> list[tuple[str, list[dict]]]:
    """What the workers receive: each relay batch packed by the stream handler's own `pack`
    (one message per FIFO group, split at the message size budget), as (group, changes)."""
    from syncer.pipeline.stream.handler import DEFAULT_MAX_MESSAGE_BYTES, pack

    messages: list[tuple[str, list[dict]]] = []
    for start in range(0, len(changes), relay_batch):
        batch = [(None, c) for c in changes[start : start + relay_batch]]
        for msg in pack(batch, groups=groups, max_bytes=DEFAULT_MAX_MESSAGE_BYTES):
            messages.append((msg.group_id, msg.changes))
    return messages


def messages_pack(changes: list[dict], *, relay_batch: int, groups: int) -> list[list[dict]]:
    """The messages' changes, in the order they are sent (see messages_pack_groups)."""
    return [m for _, m in messages_pack_groups(changes, relay_batch=relay_batch, groups=groups)]


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
            "syncer_appliedbatch",
            "syncer_failedchange",
        ):
            cur.execute(f"DELETE FROM {table}")


def table_rows() -> dict[str, tuple[str, str]]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, cheffirst, cheflast FROM cheftable")
        return {k: (f, last) for k, f, last in cur.fetchall()}


def run_apply(messages: list[list[dict]]) -> float:
    from syncer.pipeline.apply import changes_apply

    failed = 0
    with common.timed() as t:
        for message in messages:
            failed += changes_apply(changes=message).failed
    if failed:
        raise SystemExit(f"apply reported {failed} failed changes; the bench data is wrong")
    return t[0]


def literals(values) -> str:
    """Comma-separated SQL literals, escaped by the driver (MySQLdb's Connection.literal)."""
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    return ", ".join(raw.literal(v).decode(raw.encoding) for v in values)


def rows_statements(upserts: list[tuple], removes: list[str]) -> list[str]:
    """The floor's data write for one message: one multi-row upsert, one DELETE ... IN, with
    the VALUES built as the apply builds them (syncer.store.sql.SqlValues)."""
    from syncer.store.sql import SqlValues, insert_head

    statements = []
    if upserts:
        values = SqlValues()
        for row in upserts:
            values.add(row)
        statements.append(
            values.sql(
                insert_head("cheftable", ("chef_id", "cheffirst", "cheflast")),
                " ON DUPLICATE KEY UPDATE cheffirst = VALUES(cheffirst),"
                " cheflast = VALUES(cheflast)",
            )
        )
    if removes:
        statements.append(f"DELETE FROM cheftable WHERE chef_id IN ({literals(removes)})")
    return statements


def run_raw(plan: list[tuple[list, list]]) -> float:
    from django.db import connection, transaction

    with common.timed() as t:
        for upserts, removes in plan:
            with transaction.atomic(), connection.cursor() as cur:
                for statement in rows_statements(upserts, removes):
                    cur.execute(statement)
    return t[0]


def run_raw_packed(plan: list[tuple[list, list]]) -> float:
    """Raw, with the transaction and both statements in one round trip."""
    from django.db import connection

    from syncer.store.sql import round_trip

    with common.timed() as t:
        for upserts, removes in plan:
            with connection.cursor() as cur:
                round_trip(cur, ["START TRANSACTION", *rows_statements(upserts, removes), "COMMIT"])
    return t[0]


def guard_rows(messages: list[list[dict]]) -> list[list[tuple]]:
    """Per message, the key-state rows a guarded apply writes (newest change per key),
    without the leading (mapping, applied_at)."""
    out = []
    for message in messages:
        newest = newest_per_key(message)
        rows = []
        for key in sorted(newest):
            c = newest[key]
            version = int(c["image"]["version"]["N"]) if c["image"] else None
            rows.append((key, int(c["seq"]), None, c["event"] == "REMOVE", version, None))
        out.append(rows)
    return out


def guard_statements() -> tuple[str, str, str]:
    """The least a guarded apply sends for its key states, on MySQL 8.0 as on MariaDB:

    - a multi-row upsert that keeps the sequence found in `previous_sequence` and moves
      the state only for newer changes (it also takes the row locks, keys sorted);
    - a read-back of those sequences by the unique key (what tells the winners; MySQL 8.0
      has no INSERT ... RETURNING, so this is a second statement).

    Built from the public model and syncer.store.sql, not from the writer's private helpers, so the
    floor stays what it says when the apply changes. Returns (insert head, upsert tail,
    SELECT prefix); the SELECT ends with `IN (` and the caller adds the keys."""
    from django.db import models

    from syncer.models import KeyState
    from syncer.store.mysql import STATE_COLUMNS
    from syncer.store.sql import insert_head, quote

    def col(name: str) -> str:
        return quote(KeyState._meta.get_field(name).column)

    table = KeyState._meta.db_table
    head = insert_head(table, [KeyState._meta.get_field(f).column for f in STATE_COLUMNS])
    newer = f"VALUES({col('sequence')}) > {col('sequence')}"
    moved = ", ".join(
        f"{col(f)} = IF({newer}, VALUES({col(f)}), {col(f)})"
        for f in ("deleted", "item_version", "source_time", "applied_at")
    )
    tail = (
        f" ON DUPLICATE KEY UPDATE {col('previous_sequence')} = {col('sequence')}, {moved}, "
        f"{col('sequence')} = GREATEST({col('sequence')}, VALUES({col('sequence')}))"
    )
    unique = next(
        c.name
        for c in KeyState._meta.constraints
        if isinstance(c, models.UniqueConstraint) and tuple(c.fields) == ("mapping", "key")
    )
    # FORCE INDEX: MariaDB kept a full-scan plan for `key IN (...)` on a table that grew
    # from empty within the run (DESIGN.md).
    select = (
        f"SELECT {col('key')}, {col('previous_sequence')} FROM {quote(table)} "
        f"FORCE INDEX ({quote(unique)}) WHERE {col('mapping')} = %s AND {col('key')} IN ("
    )
    return head, tail, select


def run_guarded_floor(plan: list[tuple[list, list]], guards: list[list[tuple]]) -> float:
    from django.db import connection, transaction
    from django.utils import timezone

    from syncer.store.sql import SqlValues

    head, tail, select = guard_statements()
    now = str(timezone.now().replace(tzinfo=None))
    with common.timed() as t:
        for (upserts, removes), guard in zip(plan, guards, strict=True):
            with transaction.atomic(), connection.cursor() as cur:
                values = SqlValues()
                lead = values.lead("chef", now)
                for row in guard:
                    values.add(row, lead)
                cur.execute(values.sql(head, tail))
                cur.execute(
                    select + ", ".join(["%s"] * len(guard)) + ")",
                    ["chef", *(row[0] for row in guard)],
                )
                if len(cur.fetchall()) != len(guard):
                    raise SystemExit("guarded floor: the read-back missed keys")
                for statement in rows_statements(upserts, removes):
                    cur.execute(statement)
    return t[0]


def run_guarded_floor_packed(plan: list[tuple[list, list]], guards: list[list[tuple]]) -> float:
    """The guarded floor in the fewest round trips a guard allows: (1) START TRANSACTION,
    the guard upsert and its read-back, which tells the winners; (2) the row writes and
    COMMIT. Two, whatever the message size."""
    from django.db import connection
    from django.utils import timezone

    from syncer.store.sql import SqlValues, round_trip

    head, tail, select = guard_statements()
    now = str(timezone.now().replace(tzinfo=None))
    with common.timed() as t:
        for (upserts, removes), guard in zip(plan, guards, strict=True):
            with connection.cursor() as cur:
                values = SqlValues()
                lead = values.lead("chef", now)
                for row in guard:
                    values.add(row, lead)
                found = round_trip(
                    cur,
                    [
                        "START TRANSACTION",
                        values.sql(head, tail),
                        select.replace("%s", literals(["chef"]))
                        + literals(row[0] for row in guard)
                        + ")",
                    ],
                )
                if len(found) != len(guard):
                    raise SystemExit("guarded floor (packed): the read-back missed keys")
                round_trip(cur, [*rows_statements(upserts, removes), "COMMIT"])
    return t[0]


def run_orm_guarded(plan: list[tuple[list, list]], guards: list[list[tuple]]) -> float:
    """The guarded floor written with the ORM: the same key-state guard and row writes."""
    from django.db import transaction
    from django.utils import timezone

    from chefs.models import Chef
    from syncer.models import KeyState

    now = timezone.now()
    with common.timed() as t:
        for (upserts, removes), guard in zip(plan, guards, strict=True):
            with transaction.atomic():
                keys = [row[0] for row in guard]
                found = {
                    s.key: s
                    for s in KeyState.objects.select_for_update().filter(
                        mapping="chef", key__in=keys
                    )
                }
                new, moved = [], []
                for key, seq, _prev, deleted, version, _source in guard:
                    state = found.get(key)
                    if state is None:
                        new.append(
                            KeyState(
                                mapping="chef",
                                key=key,
                                sequence=seq,
                                deleted=deleted,
                                item_version=version,
                                applied_at=now,
                            )
                        )
                    elif seq > int(state.sequence):
                        state.previous_sequence, state.sequence = state.sequence, seq
                        state.deleted, state.item_version, state.applied_at = (
                            deleted,
                            version,
                            now,
                        )
                        moved.append(state)
                if new:
                    KeyState.objects.bulk_create(new)
                if moved:
                    KeyState.objects.bulk_update(
                        moved,
                        ["previous_sequence", "sequence", "deleted", "item_version", "applied_at"],
                    )
                if upserts:
                    Chef.objects.bulk_create(
                        [Chef(chef_id=k, first_name=f, last_name=last) for k, f, last in upserts],
                        update_conflicts=True,
                        update_fields=["first_name", "last_name"],
                    )
                if removes:
                    Chef.objects.filter(chef_id__in=removes).delete()
    return t[0]


def run_naive(changes: list[dict]) -> float:
    from django.db import transaction

    from chefs.models import Chef

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


def paths(messages, plan, guards) -> dict[str, Callable[[int | None], float]]:
    """The measured paths; each runs on the first k messages (all for None), timed."""
    return {
        "apply": lambda k: run_apply(messages[:k]),
        "raw upsert": lambda k: run_raw(plan[:k]),
        "guarded floor": lambda k: run_guarded_floor(plan[:k], guards[:k]),
        "raw upsert, packed": lambda k: run_raw_packed(plan[:k]),
        "guarded floor, packed": lambda k: run_guarded_floor_packed(plan[:k], guards[:k]),
        "ORM guarded floor": lambda k: run_orm_guarded(plan[:k], guards[:k]),
    }


def count_round_trips(runs: dict, *, messages: int) -> dict[str, tuple[float, str]]:
    """Each path on its first `messages` messages through a counting proxy (no delay):
    client commands (round trips) per message and where they go. Counts do not depend on
    the round trip's length, so one pass serves every --rtt-ms."""
    proxy = common.database_proxy(rtt_ms=0)
    out = {}
    try:
        common.database_route(proxy)
        for name, run in runs.items():
            tables_clear()
            proxy.heads = []
            before = proxy.commands
            run(messages)
            total = proxy.commands - before
            kinds = proxy.kinds()
            where = ", ".join(f"{k} {v / messages:.2g}" for k, v in kinds.most_common())
            out[name] = (total / messages, where)
    finally:
        common.database_route(None)
        proxy.stop()
    return out


def _verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return ""
    return f" (target >= {target}: {'met' if ratio >= target else 'not met'})"


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
    p.add_argument(
        "--rtt-ms",
        type=float,
        action="append",
        help="Round trip added to every statement by a delaying proxy (0: straight to "
        "MariaDB over loopback); repeatable. Default: 0 and 1 (about Aurora's).",
    )
    p.add_argument(
        "--count-messages",
        type=int,
        default=200,
        help="Messages of each path run through a counting proxy for the round trips.",
    )
    p.add_argument("--naive-changes", type=int, default=None, help="Run naive on a prefix.")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="Rounds of each path (the ORM path: one); the best of them counts.",
    )
    p.add_argument("--seed", type=int, default=8)
    args = p.parse_args()
    groups_list = args.groups or [4, 1]
    rtts = args.rtt_ms or [0.0, 1.0]
    if any(r < 0 for r in rtts):
        p.error("--rtt-ms must be >= 0")

    common.database_recreate(args.database)
    try:
        common.django_setup(database=args.database)
        changes = changes_generate(
            total=args.changes, keys=args.keys, seed=args.seed, dup_rate=args.duplicates
        )
        counts = {e: sum(c["event"] == e for c in changes) for e in ("INSERT", "MODIFY", "REMOVE")}
        dups = len(changes) - len({c["id"] for c in changes})
        print(f"{len(changes):,} changes over {args.keys:,} keys: {counts}, {dups:,} redelivered")

        rows: list[tuple] = []
        notes: list[str] = []
        rtt_seen: dict[float, float] = {}
        apply_rates: list[tuple[str, float]] = []
        for groups in groups_list:
            messages = messages_pack(changes, relay_batch=args.relay_batch, groups=groups)
            plan, expected = plan_writes(messages)
            guards = guard_rows(messages)
            size = len(changes) / len(messages)
            label = f"{groups} group(s), {size:.0f} changes/message"
            runs = paths(messages, plan, guards)
            trips = count_round_trips(runs, messages=min(args.count_messages, len(messages)))
            for name, (per_message, where) in trips.items():
                notes.append(f"{label}, {name}: {per_message:.2f} round trips/message: {where}")
            for rtt in rtts:
                proxy = common.DelayProcess(rtt_ms=rtt) if rtt else None
                try:
                    common.database_route(proxy)
                    if rtt not in rtt_seen:
                        rtt_seen[rtt] = common.round_trip_ms()
                    timings: dict[str, float] = {}
                    names = list(runs)
                    for round_ in range(args.repeat):
                        # Each round in another order, so no path always follows the same
                        # one; the slow ORM path once. Best of the rounds per path.
                        shift = round_ % len(names)
                        for name in names[shift:] + names[:shift]:
                            if round_ and name == "ORM guarded floor":
                                continue
                            tables_clear()
                            common.database_quiesce()
                            secs = runs[name](None)
                            if table_rows() != expected:
                                raise SystemExit(f"{name} left a table different from expected")
                            timings[name] = min(secs, timings.get(name, secs))
                    timings = {name: timings[name] for name in names}
                finally:
                    common.database_route(None)
                    if proxy is not None:
                        proxy.stop()
                n = len(changes)
                for name, secs in timings.items():
                    rows.append(
                        (f"{name} ({label})", f"{rtt:g}", n, secs, n / secs, trips[name][0], "")
                    )
                apply_s, raw_s, floor_s = (
                    timings["apply"],
                    timings["raw upsert"],
                    timings["guarded floor"],
                )
                raw_p, floor_p = timings["raw upsert, packed"], timings["guarded floor, packed"]
                target = 0.9 if rtt >= 1 else 0.85 if rtt == 0 else None

                # The target is against its guarded floor (a statement a round trip);
                # the packed floor, the least any guarded apply can send, is the stricter.
                notes.append(
                    f"{label}, {rtt:g} ms: apply / guarded floor = **{floor_s / apply_s:.2f}**"
                    f"{_verdict(floor_s / apply_s, target)}; apply / guarded floor, packed = "
                    f"**{floor_p / apply_s:.2f}**{_verdict(floor_p / apply_s, target)}; "
                    f"apply / raw upsert, packed = {raw_p / apply_s:.2f}; guarded floor / raw "
                    "upsert: "
                    f"packed {raw_p / floor_p:.2f}, a statement a round trip "
                    f"{raw_s / floor_s:.2f}"
                )
                orm_s = timings["ORM guarded floor"]
                notes.append(
                    f"{label}, {rtt:g} ms: hand-written SQL pays: guarded floor, packed / ORM "
                    f"guarded floor = {orm_s / floor_p:.2f}x; apply / ORM guarded floor = "
                    f"{orm_s / apply_s:.2f}x"
                )
                apply_rates.append((f"apply ({label}, {rtt:g} ms)", n / apply_s))

        if 0 in rtts:  # one ORM statement per change: only over loopback, or it takes hours
            naive_changes = changes[: args.naive_changes] if args.naive_changes else changes
            tables_clear()
            common.database_quiesce()
            naive_s = run_naive(naive_changes)
            final = table_rows()
            wrong = sum(1 for k, v in final.items() if expected.get(k) != v) + len(
                set(expected) - set(final)
            )
            naive_rate = len(naive_changes) / naive_s
            rows.append(
                (
                    "naive save()/delete() per change",
                    "0",
                    len(naive_changes),
                    naive_s,
                    naive_rate,
                    "",
                    wrong if not args.naive_changes else "",
                )
            )
            for label, rate in apply_rates:
                if label.endswith(", 0 ms)"):
                    notes.append(f"{label}: apply / naive = {rate / naive_rate:.1f}x")
            if not args.naive_changes:
                notes.append(
                    f"naive left {wrong} row(s) different from the stream's final state "
                    "(no sequence guard: redelivered old changes overwrite newer ones)"
                )
        notes.append(
            "round trip per statement measured (mean of SELECT 1): "
            + ", ".join(
                f"{r:g} ms added -> {ms:.3f} ms" if r else f"loopback {ms:.3f} ms"
                for r, ms in rtt_seen.items()
            )
        )
        notes.append(
            f"{len(changes):,} changes ({counts['INSERT']:,} INSERT, {counts['MODIFY']:,} "
            f"MODIFY, {counts['REMOVE']:,} REMOVE; {dups:,} redeliveries) over "
            f"{args.keys:,} keys; relay batch {args.relay_batch}; round trips counted on the "
            f"first {args.count_messages} messages of each path; best of {args.repeat} "
            "round(s) per path (the ORM path and naive: one), each after the tables are "
            "cleared and InnoDB has purged what was deleted"
        )
        table = common.table_format(
            [
                "path",
                "rtt ms",
                "changes",
                "seconds",
                "changes/s",
                "round trips/message",
                "wrong rows",
            ],
            rows,
        )
        common.results_append(
            title="Apply throughput", table=table, notes=notes, record=not args.no_record
        )
    finally:
        if not args.keep_database:
            common.database_drop(args.database)


if __name__ == "__main__":
    main()
