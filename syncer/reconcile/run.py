"""Reconcile: find drift between each mapped DynamoDB table and its MySQL table, and repair it.

How it stays memory-bounded at any table size (neither table is ever held whole), with
work linear in the table size:
1. Scan phase: DynamoDB is read with a parallel Scan in N segments. Each segment's thread
   converts its pages through the mapping (`row_from_image`) into spill rows (the key, the
   CRC32 of the key, the mapped values as canonical JSON text, the version), sorted by key
   hash, while the other threads wait on DynamoDB; the calling thread writes them into
   `ReconcileItem` with multi-row INSERTs. In memory: about one page per segment (a 1 MB
   Scan page parsed by botocore) and a few converted pages in a bounded queue.
2. Snapshot of the MySQL side, after the scan: one INSERT ... SELECT records in
   `ReconcileKey` the CRC32 of the key and the primary key of every keyed row (and one more
   the tombstones' keys), computed by the database. The mapped table has no key-hash column,
   so this is what lets a bucket find its rows through an index instead of scanning the
   whole table per bucket.
3. Compare phase: the 32-bit key-hash space is cut into B equal ranges ("buckets"), B chosen
   from the row counts so that a bucket holds about `bucket_rows` keys. For one bucket, the
   spilled DynamoDB items are loaded into a dict (an index range of the spill, whose rows
   sit together since each page was written in hash order), then the bucket's MySQL rows
   (primary keys from the snapshot) are fetched and compared with it, first as canonical
   JSON text, field by field when the texts differ; what is left in the dict is missing
   in MySQL. Peak memory is one bucket, whatever the table size.
4. Each bucket's outcome is a partial report (counts and the first samples by key); the
   run's report is their sum. `--distributed` runs the very same scan and compare steps as
   Celery tasks that store their partial reports in `ReconcileTask`, so the aggregated
   report equals the local one by construction. The spilled rows are deleted at the end.

Repairs go through the existing write paths, never a second one:
- to MySQL: `syncer.outbox.publish.key_resync` (locks the key state, consistent read, writes
  DynamoDB's current state through syncer.store.mysql: never older than what the scan saw).
- to DynamoDB: the outbox (`outbox_record` + `outbox_publish`), with the entry's base
  version set to the version the scan read, so the conditional write is refused if the
  item changed after the scan. An item missing in DynamoDB is re-created with the outbox's
  conditional put ("key absent"); an item missing in MySQL is deleted with the outbox's
  delete conditioned on the scanned version.
Keys with a legacy write still pending in the outbox are in flight, not repaired.

Under traffic (writes keep flowing while the run compares), a key found different or
missing by the compare is a candidate, not yet drift: the change the scan saw may still be
on its way through the stream, the queue and the worker. Each candidate is looked at again
("recheck"): MySQL first (the row and the key state the sync keeps), then DynamoDB with a
consistent read, no sooner than `settle` seconds after the scan ended (the default is a few
times the measured sync lag p99, see `settle_default`; `--settle` sets it). Reading MySQL
first means nothing MySQL holds can be newer than the DynamoDB read that follows. The rules,
each against the previous look at the key (the scan, then the previous recheck):
1. Settled: both stores now agree (both absent included) -> counted "settled", not drift.
2. Stale scan: the key state records an applied version newer than the one the scan read;
   the scan's copy is not reported, only what the recheck finds is (rule 1, 4 or 5).
3. Not moved: DynamoDB holds what the previous look saw (same existence, version and
   values), yet MySQL differs although `settle` seconds have passed -> drift (a lost or
   stuck change, or an edit behind the sync's back). So is a key whose state says the sync
   applied exactly DynamoDB's current version while MySQL differs, and a row present while
   its key state is a tombstone.
4. Lagging: DynamoDB moved but MySQL has not applied what the previous look saw (applied
   version below it; for items without a version, no change applied whose stream time is
   after that look) -> drift: the pipeline did not keep up within `settle`.
5. In flight: DynamoDB moved since the previous look and MySQL has applied what that look
   saw (rule 4 does not hold) -> the newest change is still on its way. The key is looked
   at again `settle` seconds later (by the run's coordinator, once for all buckets); when
   that look finds it in flight again within 2 x `settle` of the one before, it is counted
   "in flight": the sync has applied everything older than `settle`. Up to RECHECK_ROUNDS
   looks; a key still moving after them is counted in flight.
Settled and in-flight keys never make the exit status 1 and are never repaired; repairs
(and their conditions) use what the last look read, not the scan. With `--distributed`,
the compare tasks are sent to start `settle` after the scan (a countdown, so no worker
process sleeps while the sync needs it), and they return the keys of rule 5 to the
coordinator, which looks at them again as a local run does.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from syncer.models import (
    KeyState,
    OutboxEntry,
    ReconcileItem,
    ReconcileKey,
    ReconcileRun,
    ReconcileTask,
)
from syncer.reconcile import COMPARE_TASK_NAME, SCAN_TASK_NAME
from syncer.registry import Mapping, MappingError, registry
from syncer.store.dynamo import items_fetch
from syncer.store.sql import SqlValues, insert_head

logger = logging.getLogger(__name__)

HASH_SPACE = 2**32  # CRC32 values
SPILL_STATEMENT_BYTES = 1_000_000  # well under max_allowed_packet (MySQL 64 MB, MariaDB 16)
MYSQL_CHUNK = 2000
DROP_CHUNK = 20_000

# Drift kinds, in report order. "tombstoned": the key exists in a store while its key
# state says the item was removed (a lost REMOVE, or a resurrection).
DRIFT_KINDS = (
    "missing_in_mysql",
    "missing_in_dynamo",
    "different",
    "tombstoned",
    "unkeyed",
)
# Not drift: "settled" differed in the compare and agreed when looked at again; "in_flight"
# was still moving with the sync applying it (module docstring, rules 1 and 5).
KINDS = ("equal", "settled", "in_flight", *DRIFT_KINDS)
SAMPLED_KINDS = (*DRIFT_KINDS, "in_flight")
REPAIR_DIRECTIONS = ("to-mysql", "to-dynamo")
REPAIR_OUTCOMES = ("repaired", "would_repair", "would_fail", "skipped", "failed")

# The settle time (seconds) when --settle is not given: SETTLE_FACTOR x the sync lag p99 of
# the last hour, within [SETTLE_MIN, SETTLE_MAX]; SETTLE_UNMEASURED when nothing was applied
# in that hour (no measure: be generous; a quiet system has little to recheck anyway).
SETTLE_FACTOR = 4.0
SETTLE_MIN = 2.0
SETTLE_MAX = 60.0
SETTLE_UNMEASURED = 10.0
RECHECK_ROUNDS = 4  # looks after the compare, at most, for keys that keep moving


class ReconcileError(Exception):
    """The run cannot go on (bad options, a task failed, DynamoDB unreachable)."""


@dataclass(frozen=True)
class ReconcileOptions:
    segments: int = 4
    consistent: bool = False
    bucket_rows: int = 20_000
    buckets: int | None = None  # fixed bucket count (tests); None: from the row counts
    samples: int = 5
    repair: str | None = None  # "to-mysql" | "to-dynamo"
    dry_run: bool = False
    settle: float | None = None  # seconds; None: settle_default() when the run starts

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MappingReport:
    mapping: str
    table: str = ""
    model: str = ""
    segments: int = 0
    buckets: int = 0
    dynamo_items: int = 0
    mysql_rows: int = 0
    drifted: int = 0  # keys (and unkeyed rows) with any drift; a key counts once
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    samples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {k: [] for k in SAMPLED_KINDS}
    )
    repairs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REPAIR_OUTCOMES, 0))

    @property
    def drift(self) -> int:
        return sum(self.counts[k] for k in DRIFT_KINDS)

    def merge(self, other: dict[str, Any], *, samples: int) -> None:
        """Add a partial report (as_dict of a bucket); samples stay the first by key."""
        self.dynamo_items += other.get("dynamo_items", 0)
        self.mysql_rows += other.get("mysql_rows", 0)
        self.drifted += other.get("drifted", 0)
        for kind, n in other["counts"].items():
            self.counts[kind] += n
        for kind, items in other["samples"].items():
            merged = self.samples[kind] + items
            self.samples[kind] = sorted(merged, key=_sample_order)[:samples]
        for outcome, n in other.get("repairs", {}).items():
            self.repairs[outcome] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "mapping": self.mapping,
            "table": self.table,
            "model": self.model,
            "segments": self.segments,
            "buckets": self.buckets,
            "dynamo_items": self.dynamo_items,
            "mysql_rows": self.mysql_rows,
            "drifted": self.drifted,
            "counts": dict(self.counts),
            "drift": self.drift,
            "samples": {k: list(v) for k, v in self.samples.items()},
            "repairs": dict(self.repairs),
        }


def _sample_order(sample: dict[str, Any]) -> tuple:
    pk = sample.get("pk")
    return (str(sample.get("key") or ""), pk if isinstance(pk, int) else -1, str(pk or ""))


@dataclass
class ReconcileReport:
    run_id: int
    options: dict[str, Any]
    mappings: list[MappingReport]

    @property
    def drift(self) -> int:
        return sum(m.drift for m in self.mappings)

    @property
    def unrepaired(self) -> int:
        """Drift that is still there after the run (all of it without a real repair)."""
        if not self.options.get("repair") or self.options.get("dry_run"):
            return self.drift
        return sum(m.drifted - m.repairs["repaired"] for m in self.mappings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "options": self.options,
            "in_sync": self.drift == 0,
            "drift": self.drift,
            "mappings": [m.as_dict() for m in self.mappings],
        }


# --- hashing: Python and MySQL agree on CRC32 of the key's UTF-8 bytes --------------------


def key_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def bucket_range(bucket: int, buckets: int) -> tuple[int, int]:
    """The half-open hash range [lo, hi) of a bucket."""
    return bucket * HASH_SPACE // buckets, (bucket + 1) * HASH_SPACE // buckets


# One encoder for every row (the C encoder; DjangoJSONEncoder only for Decimal, dates...).
_ENCODER = DjangoJSONEncoder(sort_keys=True)


def _canonical_text(row: dict[str, Any]) -> str:
    """Field values as JSON text, keys sorted: what is spilled and compared. Two rows with
    the same text are equal; rows whose texts differ are compared field by field (1 and
    1.0 differ as text, not as values)."""
    return _ENCODER.encode(row)


def _canonical(row: dict[str, Any]) -> dict[str, Any]:
    """Field values as JSON would carry them, so both sides compare alike."""
    return json.loads(_canonical_text(row))


# --- DynamoDB scan ----------------------------------------------------------------------

# A source of scan pages: (mapping, segment, total_segments, consistent) -> pages of items.
PageSource = Callable[[Mapping, int, int, bool], Iterable[list[dict[str, Any]]]]


def dynamo_scan_pages(
    mapping: Mapping, segment: int, total_segments: int, consistent: bool
) -> Iterator[list[dict[str, Any]]]:
    """Pages of one parallel-Scan segment of the mapping's table (DynamoDB JSON items)."""
    from syncer.aws import dynamo_errors, dynamodb_scan_client

    client = dynamodb_scan_client()
    kwargs: dict[str, Any] = {
        "TableName": mapping.table_name,
        "Segment": segment,
        "TotalSegments": total_segments,
        "ConsistentRead": consistent,
    }
    while True:
        with dynamo_errors():
            page = client.scan(**kwargs)
        start = page.get("LastEvaluatedKey")
        box = [page.get("Items", [])]
        del page
        # Yielded from a list, so this frame holds no reference: the caller frees the page.
        yield box.pop()
        if not start:
            return
        kwargs["ExclusiveStartKey"] = start


INVALID_KEY = "key: not a valid key"  # the spilled error of an item whose key is refused

# A spilled item: the values of _SPILL_COLUMNS, in order.
_SPILL_COLUMNS = ("run_id", "mapping", "segment", "key_hash", "key", "values", "error", "version")
SpillRow = tuple[Any, ...]


def _spill_row(run_id: int, mapping: Mapping, segment: int, item: dict[str, Any]) -> SpillRow:
    typed = item.get(mapping.key_attribute)
    try:
        key = mapping.key_from_keys({mapping.key_attribute: typed})
    except MappingError:
        key = json.dumps(typed)[:255]
        return (run_id, mapping.name, segment, key_hash(key), key, "", INVALID_KEY, None)
    values, error = "", ""
    try:
        values = _canonical_text(mapping.row_from_image(item))
    except MappingError as exc:
        error = str(exc)[:2000]
    version = mapping.version_from_image(item)
    return (run_id, mapping.name, segment, key_hash(key), key, values, error, version)


def _spill_rows(
    run_id: int, mapping: Mapping, segment: int, page: list[dict[str, Any]]
) -> list[SpillRow]:
    rows = [_spill_row(run_id, mapping, segment, item) for item in page]
    # In key-hash order: the rows of one compare bucket then sit together in the spill
    # table (its clustered index is in insertion order), so reading a bucket back reads a
    # few pages per spilled page instead of one page per item.
    rows.sort(key=_by_hash)
    return rows


def _by_hash(row: SpillRow) -> int:
    return row[3]


def segment_scan(
    *,
    run_id: int,
    mapping: Mapping,
    segment: int,
    total_segments: int,
    consistent: bool,
    pages: Iterable[list[dict[str, Any]]] | None = None,
) -> int:
    """Scan one segment and spill its items. Returns how many items were spilled."""
    pages = pages if pages is not None else dynamo_scan_pages(
        mapping, segment, total_segments, consistent
    )  # fmt: skip
    count = 0
    for page in pages:
        rows = _spill_rows(run_id, mapping, segment, page)
        _spill_write(rows)
        count += len(rows)
    return count


def _spill_write(rows: list[SpillRow]) -> None:
    """Multi-row INSERTs of about SPILL_STATEMENT_BYTES each (the driver's escaping, built
    here: executemany's per-value binding was five times slower)."""
    if not rows:
        return
    head = insert_head(ReconcileItem._meta.db_table, _SPILL_COLUMNS)
    values = SqlValues()
    with connection.cursor() as cur:
        for row in rows:
            values.add(row)
            if values.size >= SPILL_STATEMENT_BYTES:
                cur.execute(values.sql(head))
                values.clear()
        if values.rows:
            cur.execute(values.sql(head))


def _scan_parallel(
    *,
    run_id: int,
    mapping: Mapping,
    options: ReconcileOptions,
    source: PageSource,
    progress: Callable[[str, int], None],
) -> int:
    """Local parallel Scan, overlapped with the spill: one thread per segment reads its
    pages and converts them to spill rows (while other threads wait on DynamoDB or this
    one on MySQL), this thread writes them (every database write stays on this thread's
    connection). The queue is bounded: at most `segments` converted pages wait, besides
    the page each reader holds."""
    pages: queue.Queue = queue.Queue(maxsize=options.segments)
    done = object()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read(segment: int) -> None:
        try:
            for page in source(mapping, segment, options.segments, options.consistent):
                if stop.is_set():
                    return
                rows = _spill_rows(run_id, mapping, segment, page)
                del page  # the raw page is the bulk of the memory: not kept while waiting
                pages.put(rows)
                del rows
        except BaseException as exc:  # noqa: BLE001 - handed to the spilling thread
            errors.append(exc)
        finally:
            pages.put(done)

    count = 0
    with ThreadPoolExecutor(max_workers=options.segments) as pool:
        for segment in range(options.segments):
            pool.submit(read, segment)
        finished = 0
        try:
            while finished < options.segments:
                rows = pages.get()
                if rows is done:
                    finished += 1
                    continue
                if errors:
                    break
                _spill_write(rows)
                count += len(rows)
                progress("scan", len(rows))
                del rows
        finally:
            stop.set()
            while finished < options.segments:  # unblock readers waiting on a full queue
                if pages.get() is done:
                    finished += 1
    if errors:
        raise errors[0]
    return count


# --- compare ----------------------------------------------------------------------------


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


@dataclass
class _Drift:
    kind: str
    key: str
    pk: Any = None
    mysql: dict[str, Any] | None = None
    dynamo: dict[str, Any] | None = None
    version: int | None = None  # item version the scan read
    error: str = ""
    tombstoned: bool = False
    fields: list[str] = field(default_factory=list)

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        if self.pk is not None:
            out["pk"] = self.pk
        if self.fields:
            out["fields"] = self.fields
        out["mysql"] = self.mysql
        out["dynamo"] = self.dynamo
        if self.version is not None:
            out["version"] = self.version
        if self.error:
            out["error"] = self.error
        return out


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
    drifts: list[_Drift] = []

    for pk, key, *row_values in _mysql_rows(mapping, run_id, lo, hi):
        report.mysql_rows += 1
        mysql_text = _canonical_text(dict(zip(fields, row_values, strict=True)))
        found = dynamo.pop(key, None)
        if found is None:
            drifts.append(_Drift("missing_in_dynamo", key, pk=pk, mysql=json.loads(mysql_text)))
            continue
        values, error, version = found
        if error:
            drifts.append(
                _Drift("different", key, pk=pk, mysql=json.loads(mysql_text), version=version,
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
                _Drift("different", key, pk=pk, mysql=mysql_values, dynamo=dynamo_values,
                       version=version, fields=differ)
            )  # fmt: skip
        elif key in tombstones:
            drifts.append(
                _Drift("tombstoned", key, pk=pk, mysql=mysql_values, dynamo=dynamo_values,
                       version=version)
            )  # fmt: skip
        else:
            report.counts["equal"] += 1
    for key, (values, error, version) in dynamo.items():
        drifts.append(
            _Drift("missing_in_mysql", key, dynamo=json.loads(values) if values else None,
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
        scanned = {d.key: _seen_by_scan(d, finished) for d in drifts}
        _sleep_until(finished + _settle(options))
        drifts, deferred = _recheck_first(mapping, scanned, report)
    drifts += invalid
    _drifts_report(report, drifts, [], mapping=mapping, options=options, on_action=on_action)
    return {**report.as_dict(), "deferred": deferred}


def _drifts_report(
    report: MappingReport,
    drifts: list[_Drift],
    in_flight: list[_Drift],
    *,
    mapping: Mapping,
    options: ReconcileOptions,
    on_action: Callable[[str], None] | None,
) -> None:
    """Count, repair (when asked) and sample the drift found; count and sample in flight."""
    report.drifted += len(drifts)
    for drift in drifts:
        # A key present in a store while its key state says "removed" is flagged whatever
        # else is wrong with it; its primary kind is still counted once.
        report.counts[drift.kind] += 1
        if drift.tombstoned and drift.kind != "tombstoned":
            report.counts["tombstoned"] += 1
        if options.repair:
            outcome, action = _repair(mapping, drift, options)
            report.repairs[outcome] += 1
            if on_action is not None and action:
                on_action(f"{mapping.name} {drift.key}: {action}")
    for kind in DRIFT_KINDS:
        chosen = sorted(
            (d for d in drifts if d.kind == kind or (kind == "tombstoned" and d.tombstoned)),
            key=lambda d: d.key,
        )[: options.samples]
        report.samples[kind] = [d.sample() for d in chosen]
    report.counts["in_flight"] += len(in_flight)
    chosen = sorted(in_flight, key=lambda d: d.key)[: options.samples]
    report.samples["in_flight"] = [d.sample() for d in chosen]


# --- recheck: a candidate is looked at again before it is reported (module docstring) -----


def settle_default(*, now=None) -> float:
    """RECONCILE_SETTLE_SECONDS when set, else SETTLE_FACTOR x the sync lag p99 of the last
    hour, within [SETTLE_MIN, SETTLE_MAX]."""
    from django.conf import settings

    from syncer.ops.dashboard import lag_summary_get

    if getattr(settings, "RECONCILE_SETTLE_SECONDS", None) is not None:
        return settings.RECONCILE_SETTLE_SECONDS
    lag = lag_summary_get(now=now)
    if lag.p99 is None:
        return SETTLE_UNMEASURED
    return round(min(SETTLE_MAX, max(SETTLE_MIN, SETTLE_FACTOR * lag.p99)), 2)


def _settle(options: ReconcileOptions) -> float:
    return options.settle if options.settle is not None else settle_default()


def _sleep_until(deadline: float) -> None:
    delay = deadline - time.time()
    if delay > 0:
        _sleep(delay)


_sleep = time.sleep  # tests replace it to act "while reconcile waits"


@dataclass
class _Seen:
    """What one look (the scan, or a recheck) saw of a key in DynamoDB, and by when."""

    present: bool
    version: int | None
    text: str  # mapped values as canonical JSON text, or the mapping's error
    at: float  # epoch seconds at which the look had ended


def _seen_by_scan(drift: _Drift, finished: float) -> _Seen:
    present = drift.kind != "missing_in_dynamo"
    text = drift.error or (_canonical_text(drift.dynamo) if drift.dynamo is not None else "")
    return _Seen(present=present, version=drift.version if present else None, text=text,
                 at=finished)  # fmt: skip


@dataclass
class _Look:
    """One look at a key: MySQL's row and key state, then DynamoDB (consistent)."""

    key: str
    pk: Any
    mysql: dict[str, Any] | None
    mysql_text: str | None
    dynamo: _Seen
    error: str
    applied_version: int | None  # the key state's item version
    deleted: bool  # the key state is a tombstone
    applied_time: float | None  # epoch: stream time of the last applied change


def _look(mapping: Mapping, keys: list[str]) -> dict[str, _Look]:
    """MySQL first, DynamoDB after: whatever MySQL holds then was already in DynamoDB."""
    model = mapping.get_model()
    fields = [fm.field for fm in mapping.fields]
    rows: dict[str, tuple[Any, str]] = {}
    states: dict[str, KeyState] = {}
    for start in range(0, len(keys), MYSQL_CHUNK):
        chunk = keys[start : start + MYSQL_CHUNK]
        for pk, key, *values in model.objects.filter(
            **{f"{mapping.key_field}__in": chunk}
        ).values_list("pk", mapping.key_field, *fields):
            rows[key] = (pk, _canonical_text(dict(zip(fields, values, strict=True))))
        states.update(
            (s.key, s) for s in KeyState.objects.filter(mapping=mapping.name, key__in=chunk)
        )
    items = items_fetch(mapping=mapping, keys=keys)
    at = time.time()
    looks = {}
    for key in keys:
        item = items.get(key)
        values, error, version = "", "", None
        if item is not None:
            _, _, _, _, _, values, error, version = _spill_row(0, mapping, 0, item)
        pk, mysql_text = rows.get(key, (None, None))
        state = states.get(key)
        stamp = (state.source_time or state.applied_at) if state is not None else None
        looks[key] = _Look(
            key=key,
            pk=pk,
            mysql=json.loads(mysql_text) if mysql_text is not None else None,
            mysql_text=mysql_text,
            dynamo=_Seen(
                present=item is not None, version=version, text=error or values, at=at
            ),  # fmt: skip
            error=error,
            applied_version=state.item_version if state is not None else None,
            deleted=bool(state and state.deleted),
            applied_time=stamp.timestamp() if stamp is not None else None,
        )
    return looks


def _look_drift(look: _Look, mapping: Mapping) -> _Drift | None:
    """The drift one look shows (None: the stores agree), as the compare would report it."""
    seen = look.dynamo
    dynamo = json.loads(seen.text) if seen.present and not look.error else None
    if look.pk is None and not seen.present:
        return None
    if look.pk is None:
        drift = _Drift("missing_in_mysql", look.key, dynamo=dynamo, version=seen.version,
                       error=look.error)  # fmt: skip
    elif not seen.present:
        drift = _Drift("missing_in_dynamo", look.key, pk=look.pk, mysql=look.mysql)
    elif look.error:
        drift = _Drift("different", look.key, pk=look.pk, mysql=look.mysql,
                       version=seen.version, error=look.error)  # fmt: skip
    else:
        differ = [fm.field for fm in mapping.fields
                  if look.mysql.get(fm.field) != dynamo.get(fm.field)]  # fmt: skip
        if not differ and not look.deleted:
            return None
        kind = "different" if differ else "tombstoned"
        drift = _Drift(kind, look.key, pk=look.pk, mysql=look.mysql, dynamo=dynamo,
                       version=seen.version, fields=differ)  # fmt: skip
    drift.tombstoned = look.deleted
    return drift


def _caught_up(prev: _Seen, look: _Look) -> bool:
    """Has MySQL applied (at least) what the previous look saw in DynamoDB?"""
    if prev.present and prev.version is not None:
        return (
            not look.deleted
            and look.applied_version is not None
            and look.applied_version >= prev.version
        )
    if not prev.present and look.deleted:
        return True  # the removal the previous look saw was applied
    # No version to go by: a change applied whose stream time is after the previous look.
    return look.applied_time is not None and look.applied_time >= prev.at


def _verdict(prev: _Seen, look: _Look, drift: _Drift | None) -> str:
    """One of settled, drift or moving (rules 1, 3-5 of the module docstring)."""
    if drift is None:
        return "settled"  # rule 1
    now = look.dynamo
    if (now.present, now.version, now.text) == (prev.present, prev.version, prev.text):
        return "drift"  # rule 3: DynamoDB did not move, MySQL still differs
    if look.deleted and look.pk is not None:
        return "drift"  # rule 3: a row the sync says was removed
    if now.version is not None and look.applied_version == now.version:
        return "drift"  # rule 3: the sync applied this very version, MySQL differs anyway
    if not _caught_up(prev, look):
        return "drift"  # rule 4: what the previous look saw was not applied within settle
    return "moving"  # rule 5


def _recheck_first(
    mapping: Mapping, scanned: dict[str, _Seen], report: MappingReport
) -> tuple[list[_Drift], list[dict[str, Any]]]:
    """The first look after the compare: counts settled keys in `report`, returns the drift
    and the keys still moving (JSON, for the coordinator's next look)."""
    looks = _look(mapping, list(scanned))
    drifts, deferred = [], []
    for key, prev in scanned.items():
        look = looks[key]
        drift = _look_drift(look, mapping)
        verdict = _verdict(prev, look, drift)
        if verdict == "settled":
            report.counts["settled"] += 1
        elif verdict == "drift":
            drifts.append(drift)
        else:
            deferred.append({"key": key, "seen": look.dynamo.__dict__})
    return drifts, deferred


def recheck_deferred(
    *,
    mapping: Mapping,
    deferred: list[dict[str, Any]],
    options: ReconcileOptions,
    on_action: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Look again, `settle` after the previous look, at the keys that were still moving;
    returns a partial report. A key found moving again within 2 x settle of its previous
    look is in flight (rule 5); after RECHECK_ROUNDS looks in all, so is one still moving."""
    settle = _settle(options)
    report = MappingReport(mapping=mapping.name)
    drifts: list[_Drift] = []
    in_flight: list[_Drift] = []
    pending = {d["key"]: _Seen(**d["seen"]) for d in deferred}
    for look_number in range(2, RECHECK_ROUNDS + 1):
        if not pending:
            break
        _sleep_until(max(s.at for s in pending.values()) + settle)
        looks = _look(mapping, sorted(pending))
        moving: dict[str, _Seen] = {}
        for key, prev in pending.items():
            look = looks[key]
            drift = _look_drift(look, mapping)
            verdict = _verdict(prev, look, drift)
            if verdict == "settled":
                report.counts["settled"] += 1
            elif verdict == "drift":
                drifts.append(drift)
            elif look.dynamo.at - prev.at <= 2 * settle or look_number == RECHECK_ROUNDS:
                in_flight.append(drift)
            else:
                moving[key] = look.dynamo  # the previous look was long ago: once more
        pending = moving
    _drifts_report(report, drifts, in_flight, mapping=mapping, options=options,
                   on_action=on_action)  # fmt: skip
    return report.as_dict()


# --- repair -------------------------------------------------------------------------------


def _pending_outbox(mapping: Mapping, drift: _Drift) -> bool:
    where = Q(key=drift.key)
    if drift.pk is not None:
        where |= Q(object_pk=str(drift.pk))
    return OutboxEntry.objects.filter(
        where, mapping=mapping.name, status=OutboxEntry.Status.PENDING
    ).exists()


def _plan(drift: _Drift, direction: str) -> str:
    if direction == "to-mysql":
        if drift.kind == "missing_in_dynamo":
            return "delete the MySQL row (absent in DynamoDB)"
        return "write DynamoDB's current item to MySQL"
    if drift.kind == "missing_in_mysql":
        return f"delete the DynamoDB item (if still at version {drift.version})"
    if drift.kind == "missing_in_dynamo":
        return "create the DynamoDB item from the MySQL row (if still absent)"
    if drift.kind == "tombstoned":
        return "clear the tombstone (both stores hold the same item)"
    return f"write the MySQL row's values to DynamoDB (if still at version {drift.version})"


def _repair(mapping: Mapping, drift: _Drift, options: ReconcileOptions) -> tuple[str, str]:
    """Repair one drifted key. Returns (outcome, description)."""
    plan = _plan(drift, options.repair)
    if _pending_outbox(mapping, drift):
        return "skipped", f"skipped, a legacy write is pending in the outbox ({plan})"
    if options.dry_run:
        if drift.error and (options.repair == "to-mysql" or drift.kind == "tombstoned"):
            # What the real run would do: map the item the recheck read (consistently).
            return "would_fail", f"would fail: {drift.error} ({plan})"
        return "would_repair", f"would {plan}"
    try:
        if options.repair == "to-mysql" or drift.kind == "tombstoned":
            from syncer.outbox.publish import key_resync

            key_resync(mapping=mapping, key=drift.key)
            return "repaired", plan
        ok = _repair_to_dynamo(mapping, drift)
    except Exception as exc:  # noqa: BLE001 - one bad key must not stop the run
        logger.warning(
            "reconcile repair failed",
            extra={
                "key": drift.key,
                "version": drift.version,
                "repair": options.repair,
                "error": f"{type(exc).__name__}: {exc}",
            },
        )
        return "failed", f"failed to {plan}: {type(exc).__name__}: {exc}"
    if not ok:
        return "skipped", f"skipped, the item changed after the scan ({plan})"
    return "repaired", plan


def _repair_to_dynamo(mapping: Mapping, drift: _Drift) -> bool:
    """Make DynamoDB hold the MySQL state of the key, through the outbox's writes, each
    conditioned on what the scan read. False: refused, the item changed since the scan."""
    from syncer.outbox import publish as outbox

    if drift.kind == "missing_in_mysql":
        return outbox.dynamo_item_delete(mapping=mapping, key=drift.key, base=drift.version)
    model = mapping.get_model()
    if drift.kind == "missing_in_dynamo":
        row = model.objects.filter(pk=drift.pk).first()
        if row is None:
            return False
        # "Key absent" condition: an item created after the scan is never overwritten.
        return outbox.dynamo_item_create(mapping=mapping, key=drift.key, instance=row)
    # different: a normal outbox publish, based on the version the scan read.
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=drift.pk).first()
        if row is None:
            return False
        entry = outbox.outbox_record(mapping=mapping, instance=row, op=OutboxEntry.Op.UPSERT)
        if mapping.version_attribute:
            OutboxEntry.objects.filter(pk=entry.pk).update(base_version=drift.version)
    outcome = outbox.outbox_publish(entry_id=entry.pk)
    if outcome == "retry":
        raise RuntimeError("outbox publish failed; the outbox sweep retries it")
    return outcome in ("published", "noop")


# --- unkeyed rows -------------------------------------------------------------------------


def unkeyed_compare(
    *, mapping: Mapping, options: ReconcileOptions, on_action: Callable[[str], None] | None
) -> dict[str, Any]:
    """MySQL rows without a key: never in DynamoDB until published (backfill gives keys)."""
    from syncer.outbox import publish as outbox

    model = mapping.get_model()
    rows = model.objects.filter(
        Q(**{f"{mapping.key_field}__isnull": True}) | Q(**{mapping.key_field: ""})
    ).order_by("pk")
    report = MappingReport(mapping=mapping.name)
    report.counts["unkeyed"] = rows.count()
    report.mysql_rows = report.drifted = report.counts["unkeyed"]
    fields = [fm.field for fm in mapping.fields]
    report.samples["unkeyed"] = [
        {"key": None, "pk": r["pk"], "mysql": _canonical({f: r[f] for f in fields})}
        for r in rows.values("pk", *fields)[: options.samples]
    ]
    if not options.repair or not report.counts["unkeyed"]:
        return report.as_dict()
    for row in rows.iterator(chunk_size=MYSQL_CHUNK):
        drift = _Drift("unkeyed", "", pk=row.pk)
        if options.repair == "to-mysql":
            report.repairs["skipped"] += 1  # nothing in DynamoDB to bring over
            action = "skipped, no key: publish it (--repair to-dynamo) or run backfill"
        elif _pending_outbox(mapping, drift):
            report.repairs["skipped"] += 1
            action = "skipped, a legacy write is pending in the outbox"
        elif options.dry_run:
            report.repairs["would_repair"] += 1
            action = "would publish the row (it gets its key from the mapping's key rule)"
        else:
            with transaction.atomic():
                entry = outbox.outbox_record(
                    mapping=mapping, instance=row, op=OutboxEntry.Op.UPSERT
                )
            outcome = outbox.outbox_publish(entry_id=entry.pk)
            ok = outcome == "published"
            report.repairs["repaired" if ok else "failed"] += 1
            action = f"published: {outcome}"
        if on_action is not None:
            on_action(f"{mapping.name} row pk={row.pk} (no key): {action}")
    return report.as_dict()


# --- running ------------------------------------------------------------------------------


def _buckets_for(mapping: Mapping, run_id: int, options: ReconcileOptions, rows: int) -> int:
    """From the larger side: `rows` keyed MySQL rows, or the items spilled from DynamoDB."""
    if options.buckets:
        return options.buckets
    spilled = ReconcileItem.objects.filter(run_id=run_id, mapping=mapping.name).count()
    return max(1, math.ceil(max(spilled, rows) / options.bucket_rows))


def _task_record(run: ReconcileRun, mapping: Mapping, phase: str, number: int, result) -> None:
    ReconcileTask.objects.update_or_create(
        run=run,
        mapping=mapping.name,
        phase=phase,
        number=number,
        defaults={"status": ReconcileTask.Status.DONE, "result": result, "error": ""},
    )


def mappings_resolve(names: list[str] | None) -> list[Mapping]:
    if not names:
        return sorted(registry.all(), key=lambda m: m.name)
    out = []
    for name in names:
        try:
            out.append(registry.get(name))
        except LookupError as exc:
            known = ", ".join(sorted(m.name for m in registry.all())) or "none"
            raise ReconcileError(f"{exc} (registered: {known})") from None
    return out


def options_validate(options: ReconcileOptions) -> None:
    if options.segments < 1 or options.segments > 1_000_000:
        raise ReconcileError("segments must be between 1 and 1,000,000")
    if options.bucket_rows < 1:
        raise ReconcileError("bucket rows must be at least 1")
    if options.buckets is not None and options.buckets < 1:
        raise ReconcileError("buckets must be at least 1")
    if options.samples < 0:
        raise ReconcileError("samples must not be negative")
    if options.repair not in (None, *REPAIR_DIRECTIONS):
        raise ReconcileError(f"repair must be one of {', '.join(REPAIR_DIRECTIONS)}")


def spill_drop(run_id: int) -> int:
    """Delete a run's spilled rows in primary-key ranges of DROP_CHUNK: a run's rows were
    inserted together, so each DELETE walks a stretch of the clustered index in order (one
    DELETE by run_id walks it in key-hash order: random pages), and no transaction holds a
    million row locks. Returns how many rows were deleted."""
    quote = connection.ops.quote_name
    deleted = 0
    with connection.cursor() as cur:
        for model in (ReconcileItem, ReconcileKey):
            table = quote(model._meta.db_table)
            cur.execute(f"SELECT MIN(id), MAX(id) FROM {table} WHERE run_id = %s", [run_id])
            lo, hi = cur.fetchone()
            if lo is None:
                continue
            for start in range(lo, hi + 1, DROP_CHUNK):
                cur.execute(
                    f"DELETE FROM {table} WHERE id >= %s AND id < %s AND run_id = %s",
                    [start, start + DROP_CHUNK, run_id],
                )
                deleted += cur.rowcount
    return deleted


def reconcile_run(
    *,
    mappings: list[Mapping],
    options: ReconcileOptions,
    distributed: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    on_action: Callable[[str], None] | None = None,
    page_source: PageSource | None = None,
    timeout: float = 3600.0,
) -> ReconcileReport:
    """Compare (and repair) each mapping; returns the aggregated report.

    `progress(phase, done, total)` is called as segments and buckets complete (and per
    scanned page locally, with total 0 when unknown)."""
    options_validate(options)
    if options.settle is None:
        options = replace(options, settle=settle_default())
    run = ReconcileRun.objects.create(options={**options.as_dict(), "distributed": distributed})
    reports = []
    try:
        for mapping in mappings:
            if distributed:
                partials = _run_distributed(run, mapping, options, progress, timeout)
            else:
                partials = _run_local(run, mapping, options, progress, on_action, page_source)
            report = MappingReport(
                mapping=mapping.name,
                table=mapping.table_name,
                model=mapping.model,
                segments=options.segments,
                buckets=len(partials),
            )
            deferred = []
            for partial in partials:
                report.merge(partial, samples=options.samples)
                deferred += partial.get("deferred", [])
            if deferred:
                if progress:
                    progress("recheck", 0, len(deferred))
                report.merge(
                    recheck_deferred(
                        mapping=mapping, deferred=deferred, options=options, on_action=on_action
                    ),
                    samples=options.samples,
                )
                if progress:
                    progress("recheck", len(deferred), len(deferred))
            report.merge(
                unkeyed_compare(mapping=mapping, options=options, on_action=on_action),
                samples=options.samples,
            )
            reports.append(report)
    finally:
        # The spilled copies are only needed during the run.
        spill_drop(run.pk)
        run.finished_at = timezone.now()
        run.save(update_fields=["finished_at"])
    return ReconcileReport(run_id=run.pk, options=options.as_dict(), mappings=reports)


def _run_local(run, mapping, options, progress, on_action, page_source) -> list[dict]:
    scanned = 0
    expected = _item_count(mapping) if progress else 0

    def scan_progress(_phase: str, n: int) -> None:
        nonlocal scanned
        scanned += n
        if progress:
            progress("scan", scanned, max(expected, scanned))

    _scan_parallel(
        run_id=run.pk,
        mapping=mapping,
        options=options,
        source=page_source or dynamo_scan_pages,
        progress=scan_progress,
    )
    scan_finished = time.time()
    if progress:
        progress("scan", scanned, scanned)
    # After the scan, never during it: a row the sync wrote while the scan ran is seen.
    rows = mysql_keys_snapshot(run_id=run.pk, mapping=mapping)
    buckets = _buckets_for(mapping, run.pk, options, rows)
    partials = []
    for bucket in range(buckets):
        partial = bucket_compare(
            run_id=run.pk,
            mapping=mapping,
            bucket=bucket,
            buckets=buckets,
            options=options,
            on_action=on_action,
            scan_finished=scan_finished,
        )
        _task_record(run, mapping, ReconcileTask.Phase.COMPARE, bucket, partial)
        partials.append(partial)
        if progress:
            progress("compare", bucket + 1, buckets)
    return partials


# --- distributed: the same steps as Celery tasks -----------------------------------------


def _item_count(mapping: Mapping) -> int:
    """DynamoDB's item count of the table (approximate in AWS: updated about every six
    hours), only for the progress display; 0 when it cannot be read."""
    from syncer.aws import dynamodb_client

    try:
        table = dynamodb_client().describe_table(TableName=mapping.table_name)["Table"]
    except Exception:  # noqa: BLE001 - progress only; the scan reports real errors
        return 0
    return int(table.get("ItemCount") or 0)


def _send(task_name: str, kwargs: dict[str, Any], countdown: float | None = None) -> None:
    from celery import current_app
    from django.conf import settings

    # The project's app is the current one (config/__init__.py): no import of `config`.
    current_app.send_task(
        task_name, kwargs=kwargs, queue=settings.RECONCILE_QUEUE_NAME, countdown=countdown
    )


def _wait(run, mapping, phase: str, total: int, progress, timeout: float) -> list[ReconcileTask]:
    import time

    deadline = time.monotonic() + timeout
    last = -1
    while True:
        tasks = ReconcileTask.objects.filter(run=run, mapping=mapping.name, phase=phase)
        failed = tasks.filter(status=ReconcileTask.Status.FAILED).first()
        if failed is not None:
            raise ReconcileError(f"{phase} task #{failed.number} failed: {failed.error}")
        done = tasks.filter(status=ReconcileTask.Status.DONE).count()
        if progress and done != last:
            progress(phase, done, total)
            last = done
        if done >= total:
            return list(tasks.order_by("number"))
        if time.monotonic() > deadline:
            raise ReconcileError(
                f"{phase} tasks: {done} of {total} done after {timeout:.0f}s; "
                "is a worker consuming the queue?"
            )
        time.sleep(0.2)


def _run_distributed(run, mapping, options, progress, timeout) -> list[dict]:
    common = {"run_id": run.pk, "mapping": mapping.name}
    for segment in range(options.segments):
        _send(SCAN_TASK_NAME, {**common, "segment": segment})
    _wait(run, mapping, ReconcileTask.Phase.SCAN, options.segments, progress, timeout)
    scan_finished = time.time()
    # The compare tasks find when the scan ended in the run's record (they look again at
    # what differs no sooner than settle after it).
    run.options = {**run.options, "scan_finished": {
        **run.options.get("scan_finished", {}), mapping.name: scan_finished}}  # fmt: skip
    run.save(update_fields=["options"])
    rows = mysql_keys_snapshot(run_id=run.pk, mapping=mapping)  # as in _run_local
    buckets = _buckets_for(mapping, run.pk, options, rows)
    # A countdown, not a sleep in the task: the worker holds the message until then
    # without taking a process the sync's own tasks need (a blocked apply would turn
    # changes in flight into drift).
    countdown = max(0.0, scan_finished + _settle(options) - time.time())
    for bucket in range(buckets):
        _send(
            COMPARE_TASK_NAME,
            {**common, "bucket": bucket, "buckets": buckets},
            countdown=countdown or None,
        )
    tasks = _wait(run, mapping, ReconcileTask.Phase.COMPARE, buckets, progress, timeout)
    return [t.result for t in tasks]


def _run_options(run_id: int) -> ReconcileOptions:
    stored = ReconcileRun.objects.get(pk=run_id).options
    known = ReconcileOptions.__dataclass_fields__
    return ReconcileOptions(**{k: v for k, v in stored.items() if k in known})


def _task_guard(run_id: int, mapping_name: str, phase: str, number: int, work) -> Any:
    """Run one task's work once: a redelivered task whose result is stored does nothing."""
    existing = ReconcileTask.objects.filter(
        run_id=run_id, mapping=mapping_name, phase=phase, number=number
    ).first()
    if existing is not None and existing.status == ReconcileTask.Status.DONE:
        return existing.result
    try:
        result = work()
    except Exception as exc:
        ReconcileTask.objects.update_or_create(
            run_id=run_id,
            mapping=mapping_name,
            phase=phase,
            number=number,
            defaults={"status": ReconcileTask.Status.FAILED, "error": f"{exc!r}"[:4000]},
        )
        raise
    ReconcileTask.objects.update_or_create(
        run_id=run_id,
        mapping=mapping_name,
        phase=phase,
        number=number,
        defaults={"status": ReconcileTask.Status.DONE, "result": result, "error": ""},
    )
    return result


def segment_scan_task(*, run_id: int, mapping: str, segment: int) -> dict[str, Any]:
    """Celery entry point: scan one segment of a distributed run."""
    options = _run_options(run_id)
    resolved = registry.get(mapping)

    def work() -> dict[str, Any]:
        # A redelivery after a crash mid-segment must not spill the segment twice.
        ReconcileItem.objects.filter(run_id=run_id, mapping=mapping, segment=segment).delete()
        n = segment_scan(
            run_id=run_id,
            mapping=resolved,
            segment=segment,
            total_segments=options.segments,
            consistent=options.consistent,
        )
        return {"items": n}

    return _task_guard(run_id, mapping, ReconcileTask.Phase.SCAN, segment, work)


def bucket_compare_task(*, run_id: int, mapping: str, bucket: int, buckets: int) -> dict:
    """Celery entry point: compare (and repair) one bucket of a distributed run."""
    options = _run_options(run_id)
    resolved = registry.get(mapping)
    stored = ReconcileRun.objects.get(pk=run_id).options
    scan_finished = stored.get("scan_finished", {}).get(mapping)
    return _task_guard(
        run_id,
        mapping,
        ReconcileTask.Phase.COMPARE,
        bucket,
        lambda: bucket_compare(
            run_id=run_id,
            mapping=resolved,
            bucket=bucket,
            buckets=buckets,
            options=options,
            scan_finished=scan_finished,
        ),
    )
