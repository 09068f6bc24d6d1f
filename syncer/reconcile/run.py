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
- to MySQL: `syncer.outbox.resync.key_resync` (locks the key state, consistent read, writes
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
coordinator, which looks at them again as a local run does."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from django.utils import timezone

from syncer.models import (
    ReconcileItem,
    ReconcileRun,
    ReconcileTask,
)
from syncer.reconcile import COMPARE_TASK_NAME, SCAN_TASK_NAME
from syncer.reconcile.compare import bucket_compare, mysql_keys_snapshot, unkeyed_compare
from syncer.reconcile.recheck import recheck_deferred, settle_default, settle_seconds
from syncer.reconcile.report import (
    MappingReport,
    ReconcileError,
    ReconcileOptions,
    ReconcileReport,
    mappings_resolve,
    options_validate,
)
from syncer.reconcile.scan import (
    PageSource,
    dynamo_scan_pages,
    scan_parallel,
    segment_scan,
    spill_drop,
)
from syncer.registry import Mapping, registry

logger = logging.getLogger(__name__)


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

    scan_parallel(
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
    countdown = max(0.0, scan_finished + settle_seconds(options) - time.time())
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


# --- the admin's reconcile repair (queued from the reconcile page, run by the worker) ----


def reconcile_repair_request(*, user, mapping_names: list[str], direction: str) -> None:
    """Queue a repairing reconcile run for the worker (the admin's reconcile page)."""
    from syncer.reconcile.tasks import reconcile_repair  # tasks import this module

    reconcile_repair.delay(mapping_names=mapping_names, direction=direction, user_id=user.pk)


def reconcile_repair_run(*, mapping_names: list[str], direction: str, user_id: int | None):
    """A repairing reconcile run started from the admin, kept in the audit trail under the
    user who asked for it (also when it fails)."""
    from django.contrib.auth import get_user_model

    from syncer.models import AuditEntry
    from syncer.ops.audit import audited

    user = get_user_model().objects.filter(pk=user_id).first()
    mappings = mappings_resolve(mapping_names)
    with audited(
        action=f"repair {direction}",
        target=",".join(m.name for m in mappings),
        via=AuditEntry.Via.ADMIN,
        user=user,
        actor="" if user else f"user {user_id} (deleted)" if user_id else "unknown",
    ) as audit:
        report = reconcile_run(mappings=mappings, options=ReconcileOptions(repair=direction))
        audit.count = sum(m.drifted for m in report.mappings)
        audit.failed = report.unrepaired
        audit.detail = f"run {report.run_id}; " + "; ".join(
            f"{m.mapping}: {m.drifted} drifted, "
            + ", ".join(f"{k}={v}" for k, v in m.repairs.items())
            for m in report.mappings
        )
    return report
