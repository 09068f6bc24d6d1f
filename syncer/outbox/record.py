"""Recording outbox entries outside the capture triggers (a publish asked for by an operator
or by reconcile) and enqueueing their publish."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import models, transaction

from syncer.models import OutboxEntry
from syncer.outbox import PUBLISH_TASK_NAME
from syncer.registry import Mapping
from syncer.store import keystate

logger = logging.getLogger(__name__)


def instance_values(mapping: Mapping, instance: models.Model) -> dict[str, Any]:
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
        values=instance_values(mapping, instance),
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
