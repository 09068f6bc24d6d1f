"""Transactional outbox: legacy-side writes -> DynamoDB, without drift and without loops.

- Every write to a mapped legacy table gets its entry from the capture triggers, in the
  writer's transaction, so the row and its entry commit together or not at all
  (syncer/outbox/capture.py); Django's legacy services enqueue the publish on commit, other
  writers' entries are due at once for the sweep. `outbox_record` writes an entry without
  a row write: a publish asked for by an operator or by reconcile.
- `outbox_publish` writes the item through syncer.store.dynamo (the mapping's pynamodb
  model), conditioned on the item version the legacy edit was based on. All pending
  entries of one legacy row are published together (the newest values, the oldest base
  version), under row locks, so publishes of one row never race each other.
- A refused condition is either our own earlier write (a publish that crashed before it
  could record success: same values at base+1) and counts as published, or a conflict: the
  conflict is recorded with both sides and MySQL is brought back to DynamoDB's state.
- The stream record caused by a publish (the echo) comes back through the normal apply
  path, which writes the same values (no change) and never records outbox entries.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from pynamodb.exceptions import PynamoDBException

from syncer.models import Conflict, OutboxEntry
from syncer.ops import metrics
from syncer.outbox import PUBLISH_TASK_NAME
from syncer.registry import Mapping, registry
from syncer.store import dynamo, keystate
from syncer.store import mysql as store_mysql

logger = logging.getLogger(__name__)


# --- recording ------------------------------------------------------------------------


def _row_values(mapping: Mapping, instance: models.Model) -> dict[str, Any]:
    return mapping.values_from_row({fm.field: getattr(instance, fm.field) for fm in mapping.fields})


def outbox_record(
    *,
    mapping: Mapping,
    instance: models.Model,
    op: str,
    seen_version: int | None = None,
) -> OutboxEntry:
    """Ask for a publish of `instance`'s current values (operator action, reconcile
    repair), inside a transaction. Row writes need no call: the capture triggers record
    them (syncer.outbox.capture). Same base version rule as the triggers': the version MySQL
    mirrors, or `seen_version` (the item version the editor saw) when older.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("outbox_record must run inside the transaction of the write")
    key = getattr(instance, mapping.key_field) or ""
    base = None
    if key:
        state = keystate.key_state_get(mapping=mapping, key=key)
        base = state.item_version if state is not None and not state.deleted else None
        if seen_version is not None:
            base = seen_version if base is None else min(base, seen_version)
    entry = OutboxEntry.objects.create(
        mapping=mapping.name,
        object_pk=str(instance.pk),
        key=key,
        op=op,
        values=_row_values(mapping, instance),
        base_version=base,
    )
    transaction.on_commit(lambda: outbox_enqueue(entry_id=entry.pk))
    return entry


def outbox_enqueue(*, entry_id: int) -> None:
    # The current app is the project's (config/__init__.py makes it so): syncer does not
    # import the project package.
    from celery import current_app

    try:
        current_app.send_task(
            PUBLISH_TASK_NAME,
            args=[entry_id],
            queue=settings.OUTBOX_QUEUE_NAME,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except Exception:  # noqa: BLE001 - the sweep republishes whatever was not enqueued
        logger.exception("could not enqueue outbox entry %s; the sweep will", entry_id)


# --- key state and resync -----------------------------------------------------------------


def key_resync(*, mapping: Mapping, key: str) -> dict[str, Any] | None:
    """Bring the mapped row of `key` to DynamoDB's current state (consistent read).

    The key's state row is locked before reading, so a stream change applied meanwhile
    waits and then applies on top (its sequence number is newer): no stale resurrection.
    Returns the item read (DynamoDB JSON), or None when it does not exist.
    """
    with transaction.atomic():
        keystate.key_state_lock(mapping=mapping, key=key)
        image = dynamo.item_fetch(mapping=mapping, key=key)
        change = store_mysql.RowChange(
            key=key,
            row=mapping.row_from_image(image) if image is not None else None,
            version=mapping.version_from_image(image) if image is not None else None,
        )
        store_mysql.rows_write(mapping=mapping, changes=[change], guard=store_mysql.Guard.CURRENT)
    return image


# --- repairs (reconcile) ------------------------------------------------------------


def dynamo_item_create(*, mapping: Mapping, key: str, instance: models.Model) -> bool:
    """Create the item of `key` from the row's values, only if it is absent (an item created
    meanwhile is never overwritten). Records the new version. False: it exists."""
    with transaction.atomic():
        keystate.key_state_lock(mapping=mapping, key=key)
        write = dynamo.item_create(mapping=mapping, key=key, values=_row_values(mapping, instance))
        if write.ok:
            keystate.key_version_record(mapping=mapping, key=key, version=write.version)
    return write.ok


def dynamo_item_delete(*, mapping: Mapping, key: str, base: int | None) -> bool:
    """Delete the item of `key` only if it is still at version `base`. False: it changed."""
    with transaction.atomic():
        keystate.key_state_lock(mapping=mapping, key=key)
        write = dynamo.item_delete(mapping=mapping, key=key, base=base)
        if write.ok:
            keystate.key_version_clear(mapping=mapping, key=key)
    return write.ok


# --- publishing -----------------------------------------------------------------------


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
        pending = list(
            OutboxEntry.objects.select_for_update()
            .filter(mapping=mapping.name, object_pk=head.object_pk, status="pending")
            .order_by("pk")
        )
        for entry in pending:
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
            batch = list(
                OutboxEntry.objects.select_for_update()
                .filter(mapping=mapping.name, object_pk=head.object_pk, status="pending")
                .order_by("pk")
            )
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


def _publish_locked(mapping: Mapping, head: OutboxEntry) -> str:
    batch = list(
        OutboxEntry.objects.select_for_update()
        .filter(mapping=mapping.name, object_pk=head.object_pk, status="pending")
        .order_by("pk")
    )
    if not any(e.pk == head.pk for e in batch):
        return "noop"  # published meanwhile by another worker
    first, last = batch[0], batch[-1]
    model = mapping.get_model()
    row = model.objects.select_for_update().filter(pk=head.object_pk).first()
    now = timezone.now()
    key = (getattr(row, mapping.key_field) if row is not None else None) or last.key or ""
    # A create if the row had no key when its oldest pending edit was made; the key was
    # given since by _key_assign, possibly in a publish that died after its write: then
    # the item is ours at version 1 and the rest of the batch builds on it.
    creating = not first.key
    base = first.base_version
    if creating and key:
        image = dynamo.item_fetch(mapping=mapping, key=key)
        if (
            image is not None
            and mapping.version_from_image(image) == 1
            and dynamo.image_values(mapping=mapping, image=image) == first.values
        ):
            creating, base = False, 1

    if last.op == OutboxEntry.Op.DELETE or row is None:
        if not key:
            # Never reached DynamoDB: nothing to delete.
            _mark(batch, status="published", published_at=now)
            return "published"
        write = dynamo.item_delete(mapping=mapping, key=key, base=base)
        if not write.ok:
            image = dynamo.item_fetch(mapping=mapping, key=key)
            if image is not None:
                _record_conflict(
                    mapping=mapping,
                    kind=Conflict.Kind.STALE_VERSION,
                    key=key,
                    first=first,
                    last=last,
                    image=image,
                )
                _mark(batch, status="conflict", published_at=now)
                key_resync(mapping=mapping, key=key)
                return "conflict"
            # Already gone (our own earlier delete, or someone else's): done.
        keystate.key_version_clear(mapping=mapping, key=key)
        _mark(batch, status="published", published_at=now)
        return "published"

    if not key:
        _count_failure(mapping, head, "the row has no key yet")
        return "retry"

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
            _record_conflict(
                mapping=mapping, kind=kind, key=key, first=first, last=last, image=image
            )
            _mark(batch, status="conflict", published_at=now)
            key_resync(mapping=mapping, key=key)
            return "conflict"

    keystate.key_version_record(mapping=mapping, key=key, version=write.version, only_newer=True)
    _mark(batch, status="published", published_at=now, published_version=write.version, key=key)
    return "published"


# --- sweep ----------------------------------------------------------------------------


def outbox_due(*, now=None) -> models.QuerySet[OutboxEntry]:
    """Pending entries whose publish is due: after a failure's backoff, or whose task may be
    lost (not published OUTBOX_LOST_AFTER_SECONDS after it was enqueued)."""
    now = now or timezone.now()
    lost = now - timedelta(seconds=settings.OUTBOX_LOST_AFTER_SECONDS)
    return OutboxEntry.objects.filter(status=OutboxEntry.Status.PENDING).filter(
        Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lte=lost)
    )


def outbox_sweep(*, inline: bool = False, limit: int = 1000) -> int:
    """Publish again what is due, one publish per legacy row. Returns how many rows.

    Each row swept is not due again for OUTBOX_LOST_AFTER_SECONDS, so entries whose task is
    only waiting behind others in the queue are not enqueued again and again."""
    now = timezone.now()
    heads = list(
        outbox_due(now=now)
        .values("mapping", "object_pk")
        .annotate(first=models.Min("pk"))
        .order_by("first")[:limit]
    )
    retry_at = now + timedelta(seconds=settings.OUTBOX_LOST_AFTER_SECONDS)
    for head in heads:
        OutboxEntry.objects.filter(
            mapping=head["mapping"], object_pk=head["object_pk"], status="pending"
        ).update(next_attempt_at=retry_at)
        if inline:
            outbox_publish(entry_id=head["first"])
        else:
            outbox_enqueue(entry_id=head["first"])
    return len(heads)


def outbox_retry_failed(*, entries: models.QuerySet[OutboxEntry]) -> int:
    """Operator action: give exhausted entries a fresh set of attempts."""
    return entries.filter(status=OutboxEntry.Status.FAILED).update(
        status=OutboxEntry.Status.PENDING, attempts=0, next_attempt_at=None, last_error=""
    )


def conflicts_resolve(*, conflicts) -> int:
    """Operator action: a reviewed conflict no longer flags its row."""
    return conflicts.filter(resolved=False).update(resolved=True)
