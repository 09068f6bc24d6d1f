"""Transactional outbox: legacy-side writes -> DynamoDB, without drift and without loops.

- Every write to a mapped legacy table gets its entry from the capture triggers, in the
  writer's transaction, so the row and its entry commit together or not at all
  (syncer/outbox/capture.py); Django's legacy services enqueue the publish on commit, other
  writers' entries are due at once for the sweep (sweep.py). `record.outbox_record` writes
  an entry without a row write: a publish asked for by an operator or by reconcile.
- `outbox_publish` writes the item through syncer.store.dynamo (the mapping's pynamodb
  model), conditioned on the item version the legacy edit was based on. All pending
  entries of one legacy row are published together (the newest values, the oldest base
  version), under row locks, so publishes of one row never race each other.
- A refused condition is either our own earlier write (a publish that crashed before it
  could record success: same values at base+1) and counts as published, or a conflict: the
  conflict is recorded with both sides and MySQL is brought back to DynamoDB's state
  (resync.key_resync).
- The stream record caused by a publish (the echo) comes back through the normal apply
  path, which writes the same values (no change) and never records outbox entries."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from pynamodb.exceptions import PynamoDBException

from syncer.models import Conflict, OutboxEntry
from syncer.ops import metrics
from syncer.outbox.resync import key_resync
from syncer.registry import Mapping, registry
from syncer.store import dynamo, keystate

logger = logging.getLogger(__name__)


def _mark(entries: list[OutboxEntry], **fields: Any) -> None:
    OutboxEntry.objects.filter(pk__in=[e.pk for e in entries]).update(**fields)


def _record_conflict(
    *,
    mapping: Mapping,
    kind: str,
    key: str,
    first: OutboxEntry,
    last: OutboxEntry,
    image: dict[str, Any] | None,
) -> Conflict:
    state = keystate.key_state_get(mapping=mapping, key=key) if key else None
    conflict = Conflict.objects.create(
        mapping=mapping.name,
        key=key,
        object_pk=last.object_pk,
        kind=kind,
        outbox_entry=last,
        legacy_op=last.op,
        legacy_values=last.values,
        legacy_time=last.created_at,
        legacy_base_version=first.base_version,
        dynamo_values=dynamo.image_values(mapping=mapping, image=image),
        dynamo_version=mapping.version_from_image(image),
        dynamo_time=state.source_time if state else None,
    )
    logger.warning(
        "outbox conflict: %s",
        kind,
        extra={
            "key": key,
            "sequence": None,
            "event_id": f"outbox:{last.pk}",
            "object_pk": last.object_pk,
        },
    )
    return conflict


def outbox_publish(*, entry_id: int) -> str:
    """Publish a pending entry (and the other pending entries of its row). Idempotent.

    Returns the outcome: "published", "conflict", "noop" or "retry" (a transient error was
    counted on the entries; the sweep tries again after a backoff).
    """
    head = OutboxEntry.objects.filter(pk=entry_id).first()
    if head is None or head.status != OutboxEntry.Status.PENDING:
        return "noop"
    mapping = registry.get(head.mapping)
    try:
        outcome = _key_assign(mapping, head)
        if outcome is None:
            with transaction.atomic():
                outcome = _publish_locked(mapping, head)
    except (PynamoDBException, BotoCoreError, ClientError) as exc:
        # DynamoDB unreachable, throttled or refusing: count it; the sweep retries later.
        _count_failure(mapping, head, f"{type(exc).__name__}: {exc}")
        outcome = "retry"
    metrics.outbox_publish_record(mapping=mapping.name, outcome=outcome)
    logger.info(
        "outbox entry %s: %s",
        entry_id,
        outcome,
        extra={"key": head.key, "sequence": None, "event_id": f"outbox:{entry_id}"},
    )
    return outcome


def _count_failure(mapping: Mapping, head: OutboxEntry, error: str) -> None:
    now = timezone.now()
    with transaction.atomic():
        for entry in _pending_locked(mapping, head.object_pk):
            entry.attempts += 1
            entry.last_error = error[:2000]
            delay = min(2**entry.attempts, settings.CELERY_RETRY_BACKOFF_MAX)
            entry.next_attempt_at = now + timedelta(seconds=delay)
            if entry.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
                entry.status = OutboxEntry.Status.FAILED
            entry.save(update_fields=["attempts", "last_error", "next_attempt_at", "status"])
    logger.warning(
        "outbox publish failed: %s",
        error,
        extra={
            "key": head.key,
            "sequence": None,
            "event_id": f"outbox:{head.pk}",
            "object_pk": head.object_pk,
        },
    )


def _key_assign(mapping: Mapping, head: OutboxEntry) -> str | None:
    """Give a legacy row without a key its key (the mapping's key rule), committed before
    anything is written to DynamoDB: if the publisher dies after its write, the echo then
    lands on this row instead of inserting a second one. Returns an outcome when the
    publish cannot go on ("conflict": another row holds the key), else None."""
    model = mapping.get_model()
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=head.object_pk).first()
        if row is None or getattr(row, mapping.key_field):
            return None
        fields = {fm.field: getattr(row, fm.field) for fm in mapping.fields}
        key = mapping.key_rule(fields) if mapping.key_rule else ""
        if not key:
            _count_failure(mapping, head, "no key rule to give this row a key")
            return "retry"
        try:
            keystate.key_assign(mapping=mapping, pk=row.pk, key=key)
        except IntegrityError:
            # Another legacy row already holds this key: keep this one unkeyed and show it.
            batch = _pending_locked(mapping, head.object_pk)
            if not batch:
                return "noop"
            _record_conflict(
                mapping=mapping,
                kind=Conflict.Kind.KEY_COLLISION,
                key=key,
                first=batch[0],
                last=batch[-1],
                image=dynamo.item_fetch(mapping=mapping, key=key),
            )
            _mark(batch, status="conflict", published_at=timezone.now())
            return "conflict"
    return None


def _pending_locked(mapping: Mapping, object_pk: Any) -> list[OutboxEntry]:
    """The row's pending entries, oldest first, locked until the transaction ends."""
    return list(
        OutboxEntry.objects.select_for_update()
        .filter(mapping=mapping.name, object_pk=object_pk, status="pending")
        .order_by("pk")
    )


def _publish_locked(mapping: Mapping, head: OutboxEntry) -> str:
    """Publish the row's pending entries as one write: the newest values, conditioned on
    the oldest entry's base version. Runs under the entries' and the row's locks."""
    batch = _pending_locked(mapping, head.object_pk)
    if not any(e.pk == head.pk for e in batch):
        return "noop"  # published meanwhile by another worker
    first, last = batch[0], batch[-1]
    row = mapping.get_model().objects.select_for_update().filter(pk=head.object_pk).first()
    key = (getattr(row, mapping.key_field) if row is not None else None) or last.key or ""
    creating, base = _create_or_update(mapping, first, key)
    if last.op == OutboxEntry.Op.DELETE or row is None:
        return _publish_delete(mapping, batch, key=key, base=base)
    if not key:
        _count_failure(mapping, head, "the row has no key yet")
        return "retry"
    return _publish_write(mapping, batch, key=key, base=base, creating=creating)


def _create_or_update(mapping: Mapping, first: OutboxEntry, key: str) -> tuple[bool, int | None]:
    """Whether the publish creates the item, and the version it is conditioned on.

    A create if the row had no key when its oldest pending edit was made; the key was given
    since by _key_assign, possibly in a publish that died after its write: then the item is
    ours at version 1 and the rest of the batch builds on it."""
    creating, base = not first.key, first.base_version
    if creating and key:
        image = dynamo.item_fetch(mapping=mapping, key=key)
        if (
            image is not None
            and mapping.version_from_image(image) == 1
            and dynamo.image_values(mapping=mapping, image=image) == first.values
        ):
            return False, 1
    return creating, base


def _publish_delete(mapping: Mapping, batch: list[OutboxEntry], *, key: str, base) -> str:
    now = timezone.now()
    if not key:
        # Never reached DynamoDB: nothing to delete.
        _mark(batch, status="published", published_at=now)
        return "published"
    write = dynamo.item_delete(mapping=mapping, key=key, base=base)
    if not write.ok:
        image = dynamo.item_fetch(mapping=mapping, key=key)
        if image is not None:
            return _conflict(mapping, batch, Conflict.Kind.STALE_VERSION, key=key, image=image)
        # Already gone (our own earlier delete, or someone else's): done.
    keystate.key_version_clear(mapping=mapping, key=key)
    _mark(batch, status="published", published_at=now)
    return "published"


def _publish_write(
    mapping: Mapping, batch: list[OutboxEntry], *, key: str, base, creating: bool
) -> str:
    first, last = batch[0], batch[-1]
    values = last.values
    if base == 1 and first.key == "" and values == first.values:
        write = dynamo.ItemWrite(ok=True, version=1)  # our own create already holds these
    elif creating:
        write = dynamo.item_create(mapping=mapping, key=key, values=values)
    else:
        write = dynamo.item_update(mapping=mapping, key=key, values=values, base=base)
    if not write.ok:
        image = dynamo.item_fetch(mapping=mapping, key=key)
        expected = (base or 0) + 1
        if (
            image is not None
            and dynamo.image_values(mapping=mapping, image=image) == values
            and (not mapping.version_attribute or mapping.version_from_image(image) == expected)
        ):
            # Our own write from a publish that died before recording it.
            write.ok, write.version = True, mapping.version_from_image(image)
        else:
            kind = Conflict.Kind.KEY_COLLISION if creating else Conflict.Kind.STALE_VERSION
            return _conflict(mapping, batch, kind, key=key, image=image)
    keystate.key_version_record(mapping=mapping, key=key, version=write.version, only_newer=True)
    _mark(
        batch,
        status="published",
        published_at=timezone.now(),
        published_version=write.version,
        key=key,
    )
    return "published"


def _conflict(mapping: Mapping, batch: list[OutboxEntry], kind: str, *, key: str, image) -> str:
    """DynamoDB refused the write: record the conflict with both sides, close the entries,
    and bring MySQL back to DynamoDB's state."""
    _record_conflict(mapping=mapping, kind=kind, key=key, first=batch[0], last=batch[-1],
                     image=image)  # fmt: skip
    _mark(batch, status="conflict", published_at=timezone.now())
    key_resync(mapping=mapping, key=key)
    return "conflict"
