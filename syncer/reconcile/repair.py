"""What a run does with the drift it found: count and sample it, and repair it in the
direction asked: to MySQL through the outbox's key resync (the one MySQL writer); to
DynamoDB by a create or delete conditioned on what the scan read (the one DynamoDB writer)
or, for a row that differs, an outbox publish. A key with an outbox entry pending is left
to the outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import models, transaction
from django.db.models import Q

from syncer.models import (
    OutboxEntry,
)
from syncer.outbox import publish, record, resync
from syncer.reconcile.report import DRIFT_KINDS, Drift, MappingReport, ReconcileOptions
from syncer.registry import Mapping
from syncer.store import dynamo, keystate

logger = logging.getLogger(__name__)


def drifts_report(
    report: MappingReport,
    drifts: list[Drift],
    in_flight: list[Drift],
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
            outcome, action = drift_repair(mapping, drift, options)
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


def pending_outbox(mapping: Mapping, drift: Drift) -> bool:
    where = Q(key=drift.key)
    if drift.pk is not None:
        where |= Q(object_pk=str(drift.pk))
    return OutboxEntry.objects.filter(
        where, mapping=mapping.name, status=OutboxEntry.Status.PENDING
    ).exists()


def _plan(drift: Drift, direction: str) -> str:
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


def drift_repair(mapping: Mapping, drift: Drift, options: ReconcileOptions) -> tuple[str, str]:
    """Repair one drifted key. Returns (outcome, description)."""
    plan = _plan(drift, options.repair)
    if pending_outbox(mapping, drift):
        return "skipped", f"skipped, a legacy write is pending in the outbox ({plan})"
    if options.dry_run:
        if drift.error and (options.repair == "to-mysql" or drift.kind == "tombstoned"):
            # What the real run would do: map the item the recheck read (consistently).
            return "would_fail", f"would fail: {drift.error} ({plan})"
        return "would_repair", f"would {plan}"
    try:
        if options.repair == "to-mysql" or drift.kind == "tombstoned":
            resync.key_resync(mapping=mapping, key=drift.key)
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


def _repair_to_dynamo(mapping: Mapping, drift: Drift) -> bool:
    """Make DynamoDB hold the MySQL state of the key, through the outbox's writes, each
    conditioned on what the scan read. False: refused, the item changed since the scan."""
    if drift.kind == "missing_in_mysql":
        return _item_delete(mapping=mapping, key=drift.key, base=drift.version)
    model = mapping.get_model()
    if drift.kind == "missing_in_dynamo":
        row = model.objects.filter(pk=drift.pk).first()
        if row is None:
            return False
        # "Key absent" condition: an item created after the scan is never overwritten.
        return _item_create(mapping=mapping, key=drift.key, instance=row)
    # different: a normal outbox publish, based on the version the scan read.
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=drift.pk).first()
        if row is None:
            return False
        entry = record.outbox_record(mapping=mapping, instance=row, op=OutboxEntry.Op.UPSERT)
        if mapping.version_attribute:
            OutboxEntry.objects.filter(pk=entry.pk).update(base_version=drift.version)
    outcome = publish.outbox_publish(entry_id=entry.pk)
    if outcome == "retry":
        raise RuntimeError("outbox publish failed; the outbox sweep retries it")
    return outcome in ("published", "noop")


def _item_create(*, mapping: Mapping, key: str, instance: models.Model) -> bool:
    """Create the item of `key` from the row's values, only if it is absent (an item created
    meanwhile is never overwritten). Records the new version. False: it exists."""
    with transaction.atomic():
        keystate.key_state_lock(mapping=mapping, key=key)
        write = dynamo.item_create(
            mapping=mapping, key=key, values=record.instance_values(mapping, instance)
        )
        if write.ok:
            keystate.key_version_record(mapping=mapping, key=key, version=write.version)
    return write.ok


def _item_delete(*, mapping: Mapping, key: str, base: int | None) -> bool:
    """Delete the item of `key` only if it is still at version `base`. False: it changed."""
    with transaction.atomic():
        keystate.key_state_lock(mapping=mapping, key=key)
        write = dynamo.item_delete(mapping=mapping, key=key, base=base)
        if write.ok:
            keystate.key_version_clear(mapping=mapping, key=key)
    return write.ok
