"""Operator actions on the sync's bookkeeping (replay and discard of failed changes, the
admin's reconcile repair)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from syncer.models import FailedChange
from syncer.pipeline.apply import ApplyResult, changes_apply
from syncer.pipeline.stream.contract import change_from_record


def _change_from_payload(failed: FailedChange) -> dict[str, Any]:
    payload = failed.payload
    if failed.source == FailedChange.Source.STREAM:
        # Kept as the Lambda-shaped stream record (what the on-failure destination gets).
        return change_from_record(payload)
    return payload


def failed_change_replay(*, failed_change: FailedChange) -> ApplyResult:
    """Apply a failed change again through the normal apply service.

    Success (applied, or stale because a newer change already won) resolves it; a new
    failure is counted on the same record with its new error.
    """
    try:
        change = _change_from_payload(failed_change)
    except (KeyError, TypeError, ValueError) as exc:
        # The payload still cannot be read: count the attempt, keep it failed.
        FailedChange.objects.filter(pk=failed_change.pk).update(
            attempts=failed_change.attempts + 1,
            error=f"replay: {exc}",
            last_failed_at=timezone.now(),
        )
        return ApplyResult(failed=1, failed_ids=[failed_change.event_id])
    if failed_change.source == FailedChange.Source.STREAM:
        # The failed change's own id identifies it from now on.
        change["id"] = failed_change.event_id
    result = changes_apply(changes=[change])
    if not result.failed:
        FailedChange.objects.filter(pk=failed_change.pk).update(
            status=FailedChange.Status.REPLAYED, resolved_at=timezone.now()
        )
    return result


@transaction.atomic
def failed_change_discard(*, failed_change: FailedChange) -> None:
    FailedChange.objects.filter(pk=failed_change.pk).update(
        status=FailedChange.Status.DISCARDED, resolved_at=timezone.now()
    )


def conflicts_resolve(*, conflicts) -> int:
    """Operator action: a reviewed conflict no longer flags its row."""
    return conflicts.filter(resolved=False).update(resolved=True)


def reconcile_repair_request(*, user, mapping_names: list[str], direction: str) -> None:
    """Queue a repairing reconcile run for the worker (the admin's reconcile page)."""
    from syncer.reconcile.tasks import reconcile_repair

    reconcile_repair.delay(mapping_names=mapping_names, direction=direction, user_id=user.pk)


def reconcile_repair_run(*, mapping_names: list[str], direction: str, user_id: int | None):
    """A repairing reconcile run started from the admin, kept in the audit trail under the
    user who asked for it (also when it fails)."""
    from django.contrib.auth import get_user_model

    from syncer.models import AuditEntry
    from syncer.ops.audit import audited
    from syncer.reconcile.run import ReconcileOptions, mappings_resolve, reconcile_run

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
