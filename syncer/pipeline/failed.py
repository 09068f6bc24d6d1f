"""Operator actions on failed changes: replay through the normal apply, or discard."""

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
