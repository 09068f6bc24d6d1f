"""Key-level repairs: bring MySQL back to DynamoDB's current item (key_resync, after a
conflict or for reconcile), and create or delete an item on behalf of reconcile, each under
the key's lock, through the store's one MySQL writer and one DynamoDB writer."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from syncer.outbox.record import instance_values
from syncer.registry import Mapping
from syncer.store import dynamo, keystate
from syncer.store import mysql as store_mysql


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


def dynamo_item_create(*, mapping: Mapping, key: str, instance: models.Model) -> bool:
    """Create the item of `key` from the row's values, only if it is absent (an item created
    meanwhile is never overwritten). Records the new version. False: it exists."""
    with transaction.atomic():
        keystate.key_state_lock(mapping=mapping, key=key)
        write = dynamo.item_create(
            mapping=mapping, key=key, values=instance_values(mapping, instance)
        )
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
