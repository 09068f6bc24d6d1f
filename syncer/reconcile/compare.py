"""The MySQL side and the compare: a snapshot of the mapped table's keys by hash range, then,
bucket by bucket, the spilled DynamoDB rows against the MySQL rows (and tombstones), which
gives the drifted keys; drift is looked at again (recheck) before it is reported."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connection, transaction
from django.db.models import Q

from syncer.models import (
    KeyState,
    OutboxEntry,
    ReconcileItem,
    ReconcileKey,
)
from syncer.reconcile.recheck import recheck_first, seen_by_scan, settle_seconds, sleep_until
from syncer.reconcile.repair import drifts_report, pending_outbox
from syncer.reconcile.report import Drift, MappingReport, ReconcileOptions
from syncer.reconcile.scan import (
    INVALID_KEY,
    MYSQL_CHUNK,
    bucket_range,
    canonical,
    canonical_text,
)
from syncer.registry import Mapping


def mysql_keys_snapshot(*, run_id: int, mapping: Mapping) -> int:
    """Record, for the run, the key hash and primary key of every keyed MySQL row, and the
    key hash of every tombstone: one INSERT ... SELECT each, the hash computed by the
    database (CRC32, the same as key_hash). Compare buckets then find their rows through
    ReconcileKey's index instead of scanning the whole table each (quadratic). Under READ
    COMMITTED (Django's MySQL default) the SELECT is a consistent read: it locks nothing in
    the mapped table. Returns how many keyed rows were recorded."""
    model = mapping.get_model()
    quote = connection.ops.quote_name
    target = (
        f"INSERT INTO {quote(ReconcileKey._meta.db_table)} ("
        + ", ".join(
            quote(ReconcileKey._meta.get_field(f).column)
            for f in ("run_id", "mapping", "source", "key_hash", "object_pk", "key")
        )
        + ") "
    )
    key_column = quote(model._meta.get_field(mapping.key_field).column)
    states = KeyState._meta
    state_key = quote(states.get_field("key").column)
    with connection.cursor() as cur:
        cur.execute(
            target + f"SELECT %s, %s, %s, CRC32({key_column}), "
            f"CAST({quote(model._meta.pk.column)} AS CHAR), '' "
            f"FROM {quote(model._meta.db_table)} "
            f"WHERE {key_column} IS NOT NULL AND {key_column} <> ''",
            [run_id, mapping.name, ReconcileKey.Source.ROW],
        )
        rows = cur.rowcount
        cur.execute(
            target + f"SELECT %s, %s, %s, CRC32({state_key}), '', {state_key} "
            f"FROM {quote(states.db_table)} "
            f"WHERE {quote(states.get_field('mapping').column)} = %s "
            f"AND {quote(states.get_field('deleted').column)}",
            [run_id, mapping.name, ReconcileKey.Source.TOMBSTONE, mapping.name],
        )
    return rows


def _snapshot(run_id: int, mapping: Mapping, source: str, lo: int, hi: int):
    return ReconcileKey.objects.filter(
        run_id=run_id, mapping=mapping.name, source=source, key_hash__gte=lo, key_hash__lt=hi
    )


def _mysql_rows(mapping: Mapping, run_id: int, lo: int, hi: int) -> Iterator[tuple[Any, ...]]:
    """(pk, key, *field values) of the keyed rows whose key hash is in [lo, hi): their
    primary keys from the run's snapshot (an index range), the rows by primary key."""
    pks = list(
        _snapshot(run_id, mapping, ReconcileKey.Source.ROW, lo, hi).values_list(
            "object_pk", flat=True
        )
    )
    rows = (
        mapping.get_model()
        .objects.exclude(**{f"{mapping.key_field}__isnull": True})
        .exclude(**{mapping.key_field: ""})
        .order_by()
    )
    fields = [fm.field for fm in mapping.fields]
    for start in range(0, len(pks), MYSQL_CHUNK):
        yield from rows.filter(pk__in=pks[start : start + MYSQL_CHUNK]).values_list(
            "pk", mapping.key_field, *fields
        )


def _tombstones(mapping: Mapping, run_id: int, lo: int, hi: int) -> set[str]:
    source = ReconcileKey.Source.TOMBSTONE
    return set(_snapshot(run_id, mapping, source, lo, hi).values_list("key", flat=True))


def bucket_compare(
    *,
    run_id: int,
    mapping: Mapping,
    bucket: int,
    buckets: int,
    options: ReconcileOptions,
    on_action: Callable[[str], None] | None = None,
    scan_finished: float | None = None,
) -> dict[str, Any]:
    """Compare one key-hash bucket of both stores, look again at what differs (not before
    `scan_finished` + settle, epoch seconds), and repair what is still drift when asked.

    Returns the bucket's partial report (the `as_dict` shape of MappingReport), plus
    "deferred": the keys still moving, for the coordinator to look at again."""
    lo, hi = bucket_range(bucket, buckets)
    fields = [fm.field for fm in mapping.fields]
    dynamo: dict[str, tuple[str, str, int | None]] = {
        key: (values, error, version)
        for key, values, error, version in ReconcileItem.objects.filter(
            run_id=run_id, mapping=mapping.name, key_hash__gte=lo, key_hash__lt=hi
        ).values_list("key", "values", "error", "version")
    }
    tombstones = _tombstones(mapping, run_id, lo, hi)
    report = MappingReport(mapping=mapping.name)
    report.dynamo_items = len(dynamo)
    drifts: list[Drift] = []

    for pk, key, *row_values in _mysql_rows(mapping, run_id, lo, hi):
        report.mysql_rows += 1
        mysql_text = canonical_text(dict(zip(fields, row_values, strict=True)))
        found = dynamo.pop(key, None)
        if found is None:
            drifts.append(Drift("missing_in_dynamo", key, pk=pk, mysql=json.loads(mysql_text)))
            continue
        values, error, version = found
        if error:
            drifts.append(
                Drift("different", key, pk=pk, mysql=json.loads(mysql_text), version=version,
                       error=error)
            )  # fmt: skip
            continue
        if values == mysql_text and key not in tombstones:  # the common case: no parsing
            report.counts["equal"] += 1
            continue
        mysql_values, dynamo_values = json.loads(mysql_text), json.loads(values)
        differ = [f for f in fields if mysql_values.get(f) != dynamo_values.get(f)]
        if differ:
            drifts.append(
                Drift("different", key, pk=pk, mysql=mysql_values, dynamo=dynamo_values,
                       version=version, fields=differ)
            )  # fmt: skip
        elif key in tombstones:
            drifts.append(
                Drift("tombstoned", key, pk=pk, mysql=mysql_values, dynamo=dynamo_values,
                       version=version)
            )  # fmt: skip
        else:
            report.counts["equal"] += 1
    for key, (values, error, version) in dynamo.items():
        drifts.append(
            Drift("missing_in_mysql", key, dynamo=json.loads(values) if values else None,
                   version=version, error=error)
        )  # fmt: skip
    del dynamo

    deferred: list[dict[str, Any]] = []
    # An item whose key the mapping refuses can never be applied, and its spilled key is
    # only a stand-in that no lookup would find: drift as it is, not looked at again.
    invalid = [d for d in drifts if d.error == INVALID_KEY]
    drifts = [d for d in drifts if d.error != INVALID_KEY]
    if drifts:
        finished = scan_finished if scan_finished is not None else time.time()
        scanned = {d.key: seen_by_scan(d, finished) for d in drifts}
        sleep_until(finished + settle_seconds(options))
        drifts, deferred = recheck_first(mapping, scanned, report)
    drifts += invalid
    drifts_report(report, drifts, [], mapping=mapping, options=options, on_action=on_action)
    return {**report.as_dict(), "deferred": deferred}


def unkeyed_compare(
    *, mapping: Mapping, options: ReconcileOptions, on_action: Callable[[str], None] | None
) -> dict[str, Any]:
    """MySQL rows without a key: never in DynamoDB until published (backfill gives keys)."""
    from syncer.outbox import publish, record

    model = mapping.get_model()
    rows = model.objects.filter(
        Q(**{f"{mapping.key_field}__isnull": True}) | Q(**{mapping.key_field: ""})
    ).order_by("pk")
    report = MappingReport(mapping=mapping.name)
    report.counts["unkeyed"] = rows.count()
    report.mysql_rows = report.drifted = report.counts["unkeyed"]
    fields = [fm.field for fm in mapping.fields]
    report.samples["unkeyed"] = [
        {"key": None, "pk": r["pk"], "mysql": canonical({f: r[f] for f in fields})}
        for r in rows.values("pk", *fields)[: options.samples]
    ]
    if not options.repair or not report.counts["unkeyed"]:
        return report.as_dict()
    for row in rows.iterator(chunk_size=MYSQL_CHUNK):
        drift = Drift("unkeyed", "", pk=row.pk)
        if options.repair == "to-mysql":
            report.repairs["skipped"] += 1  # nothing in DynamoDB to bring over
            action = "skipped, no key: publish it (--repair to-dynamo) or run backfill"
        elif pending_outbox(mapping, drift):
            report.repairs["skipped"] += 1
            action = "skipped, a legacy write is pending in the outbox"
        elif options.dry_run:
            report.repairs["would_repair"] += 1
            action = "would publish the row (it gets its key from the mapping's key rule)"
        else:
            with transaction.atomic():
                entry = record.outbox_record(
                    mapping=mapping, instance=row, op=OutboxEntry.Op.UPSERT
                )
            outcome = publish.outbox_publish(entry_id=entry.pk)
            ok = outcome == "published"
            report.repairs["repaired" if ok else "failed"] += 1
            action = f"published: {outcome}"
        if on_action is not None:
            on_action(f"{mapping.name} row pk={row.pk} (no key): {action}")
    return report.as_dict()
