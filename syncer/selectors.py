"""Read-side queries over the sync's bookkeeping."""

from __future__ import annotations

from django.db import models
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.functions import Cast, Collate

from syncer.models import KEY_COLLATION, Conflict, KeyState, OutboxEntry
from syncer.registry import Mapping


class SyncState(models.TextChoices):
    IN_SYNC = "in_sync", "in sync"
    PENDING = "pending", "pending publish"
    CONFLICT = "conflict", "conflict"
    FAILED = "failed", "failed"
    UNKEYED = "unkeyed", "no key yet"


def sync_annotations(*, mapping: Mapping) -> dict[str, models.Expression]:
    """Annotations for a queryset of the mapped model: item version and sync flags."""
    # Same collation on both sides, whatever the connection's default is.
    pk_text = Collate(Cast(OuterRef("pk"), models.CharField(max_length=64)), KEY_COLLATION)
    entries = OutboxEntry.objects.filter(mapping=mapping.name, object_pk=pk_text)
    return {
        "sync_version": Subquery(
            KeyState.objects.filter(mapping=mapping.name, key=OuterRef(mapping.key_field)).values(
                "item_version"
            )[:1]
        ),
        "sync_pending": Exists(entries.filter(status=OutboxEntry.Status.PENDING)),
        "sync_failed": Exists(entries.filter(status=OutboxEntry.Status.FAILED)),
        "sync_conflict": Exists(
            Conflict.objects.filter(mapping=mapping.name, object_pk=pk_text, resolved=False)
        ),
    }


def sync_state_of(obj: models.Model, *, mapping: Mapping) -> SyncState:
    """The state of one annotated object (see sync_annotations)."""
    if getattr(obj, "sync_failed", False):
        return SyncState.FAILED
    if getattr(obj, "sync_conflict", False):
        return SyncState.CONFLICT
    if getattr(obj, "sync_pending", False):
        return SyncState.PENDING
    if not getattr(obj, mapping.key_field):
        return SyncState.UNKEYED
    return SyncState.IN_SYNC


def key_state_get(*, mapping: Mapping, key: str | None) -> KeyState | None:
    if not key:
        return None
    return KeyState.objects.filter(mapping=mapping.name, key=key).first()
