"""Backfill: the initial load of one store from the other, batched, throttled, resumable.

- to MySQL: a Scan of the DynamoDB table, page by page; each page is written with one bulk
  `INSERT ... ON DUPLICATE KEY UPDATE` (syncer.store.mysql, version guard), under the key-state
  locks, and the keys' item versions recorded. A key whose state already holds this
  version or a newer one (the stream got there first), or a tombstone, is left alone.
  An item without a version cannot be ordered against what MySQL holds, so it is written
  only for a key the sync has never seen (no key state: a first load). A known key is left
  to the stream, which delivers any change newer than what it applied: "already current"
  when MySQL holds the item's values, else "kept" (listed; `reconcile --repair to-mysql`
  settles it under the key lock). So a rerun (`--restart`) rewrites nothing that did not
  change, versioned or not.
- to DynamoDB: the MySQL rows in primary-key order. Rows without a key (an adopted legacy
  table) get one from the mapping's key rule; then the items absent in DynamoDB (checked
  with BatchGetItem) are written with BatchWriteItem at version 1, both through
  syncer.store.dynamo, and the key states record that version. An item that already
  exists is never overwritten (the new API may have written it); `reconcile` reports any
  difference.
- Every item read ends in one count: written, already current (the target holds this state
  or a newer one), kept (the target holds other values that backfill never overwrites;
  reconcile reports them) or failed (the mapping refused it, or its key is taken); the
  command exits 1 when any failed.
- The checkpoint (BackfillCheckpoint) is saved after each batch. Every write is idempotent
  (keys are unique on both sides), so a batch redone after a crash adds no duplicate.
- Echoes: what backfill writes to DynamoDB comes back through the stream (when a relay
  runs) and applies as a no-op: the same values for a key MySQL already holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from syncer.aws import dynamo_errors, dynamodb_client
from syncer.models import BackfillCheckpoint
from syncer.registry import Mapping, MappingError
from syncer.store import dynamo, keystate
from syncer.store import mysql as store_mysql

logger = logging.getLogger(__name__)

DIRECTIONS = ("mysql", "dynamo")


class BackfillError(Exception):
    """The backfill cannot start or go on (bad options, already finished, AWS down)."""


OUTCOMES = ("current", "kept", "failed")
SAMPLES = 20  # per outcome


@dataclass
class BackfillResult:
    mapping: str
    direction: str
    read: int = 0
    written: int = 0
    current: int = 0  # the target already holds this state or a newer one
    kept: int = 0  # the target holds other values: never overwritten, reconcile compares
    failed: int = 0  # could not be written: the mapping refused it, its key is taken...
    keyed: int = 0  # legacy rows given a key
    total: int = 0  # what the run will read (approximate to MySQL: DynamoDB's item count)
    resumed: bool = False
    finished: bool = False
    samples: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {o: [] for o in OUTCOMES}
    )  # not written, and why (this invocation's first ones)

    @property
    def skipped(self) -> int:
        return self.current + self.kept + self.failed

    def count(self, outcome: str, sample: dict[str, Any] | None = None, n: int = 1) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)
        if sample is not None and len(self.samples[outcome]) < SAMPLES:
            self.samples[outcome].append(sample)


class Throttle:
    """Keeps the average rate at or under `rate` items per second (None: unthrottled)."""

    def __init__(self, rate: float | None, *, sleep=time.sleep, clock=time.monotonic):
        self.rate = rate
        self.sleep = sleep
        self.clock = clock
        self.start = clock()
        self.count = 0

    def wait(self, items: int) -> None:
        self.count += items
        if not self.rate:
            return
        ahead = self.count / self.rate - (self.clock() - self.start)
        if ahead > 0:
            self.sleep(ahead)


def _checkpoint(mapping: Mapping, direction: str, restart: bool) -> tuple[BackfillCheckpoint, bool]:
    checkpoint, created = BackfillCheckpoint.objects.get_or_create(
        mapping=mapping.name, direction=direction, defaults={"started_at": timezone.now()}
    )
    if restart and not created:
        checkpoint.position = None
        checkpoint.items_read = checkpoint.items_written = checkpoint.items_skipped = 0
        checkpoint.items_current = checkpoint.items_kept = checkpoint.items_failed = 0
        checkpoint.finished = False
        checkpoint.started_at = timezone.now()
        checkpoint.save()
        created = True
    if checkpoint.finished:
        raise BackfillError(
            f"the backfill of {mapping.name} to {direction} finished on "
            f"{checkpoint.updated_at:%Y-%m-%d %H:%M}; pass --restart to run it again"
        )
    return checkpoint, not created and checkpoint.position is not None


def _save(checkpoint: BackfillCheckpoint, result: BackfillResult, position: Any) -> None:
    checkpoint.position = position
    checkpoint.items_read = result.read
    checkpoint.items_written = result.written
    checkpoint.items_skipped = result.skipped
    checkpoint.items_current = result.current
    checkpoint.items_kept = result.kept
    checkpoint.items_failed = result.failed
    checkpoint.save()


def backfill_run(
    *,
    mapping: Mapping,
    direction: str,
    batch_size: int = 500,
    rate: float | None = None,
    restart: bool = False,
    dry_run: bool = False,
    progress: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    if direction not in DIRECTIONS:
        raise BackfillError(f"direction must be one of {', '.join(DIRECTIONS)}")
    if batch_size < 1:
        raise BackfillError("batch size must be at least 1")
    if rate is not None and rate <= 0:
        raise BackfillError("rate must be positive")
    result = BackfillResult(mapping=mapping.name, direction=direction)
    if dry_run:
        return _dry_run(mapping, direction, result)
    checkpoint, resumed = _checkpoint(mapping, direction, restart)
    result.resumed = resumed
    result.read = checkpoint.items_read
    result.written = checkpoint.items_written
    result.current = checkpoint.items_current
    result.kept = checkpoint.items_kept
    result.failed = checkpoint.items_failed
    result.total = _total(mapping, direction)
    throttle = Throttle(rate)
    run = _to_mysql if direction == "mysql" else _to_dynamo
    run(mapping, checkpoint, result, batch_size, throttle, progress)
    checkpoint.finished = True
    _save(checkpoint, result, checkpoint.position)
    result.finished = True
    return result


def _dry_run(mapping: Mapping, direction: str, result: BackfillResult) -> BackfillResult:
    """Count what a run would read (MySQL rows, or DynamoDB's approximate item count)."""
    if direction == "dynamo":
        model = mapping.get_model()
        result.read = model.objects.count()
        result.keyed = model.objects.filter(_unkeyed(mapping)).count()
    else:
        with dynamo_errors():
            table = dynamodb_client().describe_table(TableName=mapping.table_name)["Table"]
        result.read = table.get("ItemCount", 0)
    return result


def _total(mapping: Mapping, direction: str) -> int:
    """What a run reads in all, for progress: the MySQL rows, or DynamoDB's item count
    (approximate in AWS: updated about every six hours)."""
    if direction == "dynamo":
        return mapping.get_model().objects.count()
    try:
        with dynamo_errors():
            table = dynamodb_client().describe_table(TableName=mapping.table_name)["Table"]
    except Exception:  # noqa: BLE001 - progress only: the scan reports real errors
        return 0
    return int(table.get("ItemCount") or 0)


def _unkeyed(mapping: Mapping) -> Q:
    return Q(**{f"{mapping.key_field}__isnull": True}) | Q(**{mapping.key_field: ""})


# --- DynamoDB -> MySQL ------------------------------------------------------------------


def _to_mysql(mapping, checkpoint, result, batch_size, throttle, progress) -> None:
    client = dynamodb_client()
    kwargs: dict[str, Any] = {"TableName": mapping.table_name, "Limit": batch_size}
    if checkpoint.position:
        kwargs["ExclusiveStartKey"] = checkpoint.position
    while True:
        with dynamo_errors():
            page = client.scan(**kwargs)
        items = page.get("Items", [])
        if items:
            _mysql_write(mapping, items, result)
        start = page.get("LastEvaluatedKey")
        _save(checkpoint, result, start)
        if progress:
            progress(result)
        throttle.wait(len(items))
        if not start:
            return
        kwargs["ExclusiveStartKey"] = start


def _mysql_write(mapping: Mapping, items: list[dict[str, Any]], result: BackfillResult) -> None:
    model = mapping.get_model()
    parsed: dict[str, tuple[dict[str, Any], int | None]] = {}
    for item in items:
        result.read += 1
        typed = item.get(mapping.key_attribute)
        key = typed.get("S") if isinstance(typed, dict) else None
        try:
            key = mapping.key_from_keys({mapping.key_attribute: typed})
            parsed[key] = (mapping.row_from_image(item), mapping.version_from_image(item))
        except MappingError as exc:
            shown = key if isinstance(key, str) else repr(typed)
            result.count("failed", {"key": shown, "error": str(exc)})
    if not parsed:
        return
    changes = [
        store_mysql.RowChange(key=k, row=row, version=version)
        for k, (row, version) in parsed.items()
    ]
    fields = [fm.field for fm in mapping.fields]
    with transaction.atomic():  # the key locks are held until the comparisons below are done
        written = store_mysql.rows_write(
            mapping=mapping, changes=changes, guard=store_mysql.Guard.VERSION
        )
        unordered = [k for k, why in written.skipped.items() if why == store_mysql.UNORDERED]
        held = {
            r[mapping.key_field]: r
            for r in model.objects.filter(**{f"{mapping.key_field}__in": unordered}).values(
                mapping.key_field, *fields
            )
        }
        for key in sorted(written.skipped):
            why = written.skipped[key]
            if why == store_mysql.TOMBSTONE:
                result.count("current", {"key": key, "why": "removed after the scan read it"})
            elif why == store_mysql.UNORDERED:
                # No version to order it by: the stream owns a key it has seen (module doc).
                mine, row = held.get(key), parsed[key][0]
                if mine is not None and all(mine[f] == row[f] for f in fields):
                    result.count("current")
                else:
                    result.count(
                        "kept",
                        {"key": key, "why": "no version, and the sync already knows the key: "
                         "MySQL holds other values (reconcile --repair to-mysql)"},
                    )  # fmt: skip
            else:
                result.count("current")  # the stream got there first
    result.written += len(written.winners)


# --- MySQL -> DynamoDB ------------------------------------------------------------------


def _to_dynamo(mapping, checkpoint, result, batch_size, throttle, progress) -> None:
    model = mapping.get_model()
    last_pk = checkpoint.position
    fields = [fm.field for fm in mapping.fields]
    while True:
        rows = model.objects.order_by("pk")
        if last_pk is not None:
            rows = rows.filter(pk__gt=last_pk)
        batch = list(rows.values("pk", mapping.key_field, *fields)[:batch_size])
        if not batch:
            return
        result.read += len(batch)
        _keys_assign(mapping, batch, result)
        _dynamo_write(mapping, [r for r in batch if r[mapping.key_field]], result)
        last_pk = batch[-1]["pk"]
        _save(checkpoint, result, last_pk)
        if progress:
            progress(result)
        throttle.wait(len(batch))


def _keys_assign(mapping: Mapping, batch: list[dict[str, Any]], result: BackfillResult) -> None:
    """Give the rows without a key their key (mapping.key_rule), committed before any
    DynamoDB write, so a crash in between leaves keyed rows that a rerun writes."""
    for row in batch:
        if row[mapping.key_field]:
            continue
        values = {fm.field: row[fm.field] for fm in mapping.fields}
        if mapping.key_rule is None:
            result.count("failed", {"pk": row["pk"], "error": "no key and no key rule"})
            continue
        try:
            # The item must be readable back through the mapping, or it would only drift.
            mapping.row_from_image(dynamo.image_build(mapping=mapping, key="probe", row=values))
            key = mapping.key_from_keys({mapping.key_attribute: {"S": mapping.key_rule(values)}})
        except MappingError as exc:
            result.count("failed", {"pk": row["pk"], "error": f"cannot be written: {exc}"})
            continue
        try:
            updated = keystate.key_assign(mapping=mapping, pk=row["pk"], key=key)
        except IntegrityError:
            result.count(
                "failed", {"pk": row["pk"], "key": key, "error": "key already held by another row"}
            )
            continue
        if updated:
            row[mapping.key_field] = key
            result.keyed += 1


def _dynamo_write(mapping: Mapping, rows: list[dict[str, Any]], result: BackfillResult) -> None:
    by_key = {r[mapping.key_field]: r for r in rows}
    tombstoned = keystate.key_states_tombstoned(mapping=mapping, keys=by_key)
    for key in sorted(tombstoned):
        result.count("kept", {"key": key, "why": "tombstone: the item was removed in DynamoDB"})
        by_key.pop(key)
    existing = dynamo.items_fetch(mapping=mapping, keys=list(by_key))
    # Already there: never overwritten. Current when it holds the row's values; else kept
    # (the new API may have written it), and reconcile compares.
    same = _versions_adopt(mapping, by_key, existing)
    result.count("current", n=len(same))
    for key in sorted(set(existing) - same):
        result.count("kept", {"key": key, "why": "exists in DynamoDB with other values"})
    todo = [k for k in by_key if k not in existing]
    if not todo:
        return
    dynamo.items_put(
        mapping=mapping,
        items=[
            dynamo.image_build(
                mapping=mapping,
                key=k,
                row={fm.field: by_key[k][fm.field] for fm in mapping.fields},
            )
            for k in todo
        ],
    )
    # Recorded once the whole batch is written: a crash in between leaves items holding
    # the rows' values, whose version a rerun adopts (_versions_adopt).
    with transaction.atomic():
        _versions_record(mapping, todo, 1 if mapping.version_attribute else None)
    result.written += len(todo)


def _versions_record(mapping: Mapping, keys: list[str], version: int | None) -> None:
    """Key states for items the backfill knows in DynamoDB: created where missing, and the
    item's version recorded where none was (later legacy edits are conditioned on it)."""
    keystate.key_versions_record(mapping=mapping, keys=keys, version=version)


def _versions_adopt(
    mapping: Mapping, rows: dict[str, dict[str, Any]], existing: dict[str, dict[str, Any]]
) -> set[str]:
    """Record the version of existing items that hold exactly the row's values (typically
    this backfill's own write from a run killed before it could record it), so later legacy
    edits are conditioned on it. An item with other values is left for reconcile. Returns
    the keys of the items that hold the row's values."""
    same: dict[int | None, list[str]] = {}
    for key, image in existing.items():
        try:
            theirs = mapping.row_from_image(image)
        except MappingError:
            continue
        if all(theirs[fm.field] == rows[key][fm.field] for fm in mapping.fields):
            same.setdefault(mapping.version_from_image(image), []).append(key)
    with transaction.atomic():
        for version, keys in same.items():
            _versions_record(mapping, keys, version)
    return {k for keys in same.values() for k in keys}
