"""Key-level repair: bring MySQL back to DynamoDB's current item (key_resync, after an
outbox conflict or for reconcile), under the key's lock, through the store's one MySQL
writer."""

from __future__ import annotations

from typing import Any

from django.db import transaction

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
