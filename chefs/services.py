"""Write-side services for the legacy table. Admin, APIs and commands call these.

Every write to cheftable, from here or from any SQL client, gets its outbox entry from the
capture triggers in the same transaction (syncer.outbox.capture), so it reaches DynamoDB. These
services write inside `legacy_write()`, which hands the trigger the version the editor saw
and enqueues the publish on commit. The sync's own writes are marked and never captured,
which is what keeps the two directions from looping.
"""

import functools
import time

from django.db import OperationalError, transaction

from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.models import OutboxEntry
from syncer.outbox.capture import legacy_write
from syncer.outbox.record import outbox_record
from syncer.outbox.resync import key_resync
from syncer.pipeline.apply import mysql_error_code

# The legacy API filled a missing name with these; kept for compatibility.
DEFAULT_FIRST_NAME = "Gordon"
DEFAULT_LAST_NAME = "Ramsay"

# A legacy write and the sync's apply touch the same rows (the row, its key state, the
# outbox through the capture trigger), so InnoDB may pick either as a deadlock victim.
# The victim's whole transaction is rolled back: run it again rather than fail the request.
RETRY_MYSQL_ERRORS = {1213, 1205}  # deadlock, lock wait timeout
WRITE_ATTEMPTS = 3


def legacy_transaction(fn):
    """`fn` in its own transaction, run again (up to WRITE_ATTEMPTS) when the database rolls
    it back as a deadlock victim or after a lock wait timeout. Inside a caller's transaction
    it is part of that one, and the caller decides."""
    atomic_fn = transaction.atomic(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if transaction.get_connection().in_atomic_block:
            return atomic_fn(*args, **kwargs)
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return atomic_fn(*args, **kwargs)
            except OperationalError as exc:
                if mysql_error_code(exc) not in RETRY_MYSQL_ERRORS or attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    return run


class ChefGone(Exception):
    """The row was deleted (by the sync or another writer) while the edit was under way."""


@legacy_transaction
def chef_create(*, first_name: str, last_name: str) -> Chef:
    """A new legacy row; it gets its DynamoDB key when it is first published."""
    chef = Chef(first_name=first_name, last_name=last_name)
    chef.full_clean()
    with legacy_write():
        chef.save()
    return chef


@legacy_transaction
def chef_update(
    *,
    chef: Chef,
    first_name: str | None = None,
    last_name: str | None = None,
    seen_version: int | None = None,
) -> Chef:
    """Change the given fields (None keeps a field). `seen_version` is the DynamoDB item
    version the editor saw, when known: an edit based on an older one is a conflict.
    Raises ChefGone when the row no longer exists."""
    locked = Chef.objects.select_for_update().filter(pk=chef.pk).first()
    if locked is None:
        raise ChefGone(f"Chef {chef.pk} was deleted meanwhile.")
    chef = locked
    changed = []
    if first_name is not None and first_name != chef.first_name:
        chef.first_name = first_name
        changed.append("first_name")
    if last_name is not None and last_name != chef.last_name:
        chef.last_name = last_name
        changed.append("last_name")
    if changed:
        chef.full_clean()
        with legacy_write(seen_version=seen_version):
            chef.save(update_fields=changed)
    return chef


@legacy_transaction
def chef_delete(*, chef: Chef, seen_version: int | None = None) -> None:
    with legacy_write(seen_version=seen_version):
        chef.delete()


@transaction.atomic
def chef_publish(*, chef: Chef) -> None:
    """Publish the row's current values to DynamoDB again (operator action: a publish
    request without a write, so it records its entry itself)."""
    outbox_record(mapping=CHEF_MAPPING, instance=chef, op=OutboxEntry.Op.UPSERT)


def chef_resync(*, chef: Chef) -> None:
    """Bring the row back to DynamoDB's current state (operator action)."""
    if chef.chef_id:
        key_resync(mapping=CHEF_MAPPING, key=chef.chef_id)
