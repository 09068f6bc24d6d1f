"""Key state: owns `KeyState`, the sync's per-key bookkeeping on the MySQL side.

Per mapped key: the stream sequence number of the newest change applied, the tombstone
(`deleted`), the DynamoDB item version MySQL mirrors (the base version of legacy edits) and
when it was applied. Reading and locking a key's state and every write of its fields outside
`syncer/store/` go through here. The stream apply's guarded multi-row upsert lives with the
row writes it guards, in `syncer.store.mysql`; it is the only other writer of these rows.

The lock on a key is the row lock on its state (created at sequence 0 if the key has none):
whoever writes the key's MySQL row or records its item version holds it, so the stream
apply, the outbox, reconcile and backfill never interleave on one key.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from syncer.models import KeyState
from syncer.registry import Mapping
from syncer.store.marks import sync_writes_mark


def key_state_get(*, mapping: Mapping, key: str) -> KeyState | None:
    """The key's state as committed (no lock); None for a key the sync has never seen."""
    return KeyState.objects.filter(mapping=mapping.name, key=key).first()


def key_states_known(*, mapping: Mapping, keys: Iterable[str]) -> set[str]:
    """Which of `keys` have a state (the sync has seen them)."""
    return set(
        KeyState.objects.filter(mapping=mapping.name, key__in=list(keys)).values_list(
            "key", flat=True
        )
    )


def key_states_tombstoned(*, mapping: Mapping, keys: Iterable[str]) -> set[str]:
    """Which of `keys` carry a tombstone (the item was removed in DynamoDB)."""
    return set(
        KeyState.objects.filter(mapping=mapping.name, key__in=list(keys), deleted=True)
        .values_list("key", flat=True)
    )  # fmt: skip


def _states_create(mapping: Mapping, keys: Iterable[str]) -> None:
    now = timezone.now()
    KeyState.objects.bulk_create(
        [KeyState(mapping=mapping.name, key=k, sequence=0, applied_at=now) for k in keys],
        ignore_conflicts=True,
    )


def key_states_lock(*, mapping: Mapping, keys: Iterable[str]) -> dict[str, KeyState]:
    """Lock the states of `keys` (created at sequence 0 where missing), in key order so
    concurrent lockers cannot deadlock; inside a transaction. Returns them by key."""
    keys = sorted(set(keys))
    _states_create(mapping, keys)
    return {
        s.key: s
        for s in KeyState.objects.select_for_update()
        .filter(mapping=mapping.name, key__in=keys)
        .order_by("key")
    }


def key_state_lock(*, mapping: Mapping, key: str) -> KeyState:
    """Lock the state of one key (created at sequence 0 if missing); inside a transaction."""
    KeyState.objects.get_or_create(
        mapping=mapping.name, key=key, defaults={"sequence": 0, "applied_at": timezone.now()}
    )
    return KeyState.objects.select_for_update().get(mapping=mapping.name, key=key)


def key_version_record(
    *, mapping: Mapping, key: str, version: int | None, only_newer: bool = False
) -> KeyState:
    """Record that DynamoDB holds the item of `key` at `version` (a write of ours went
    through): the tombstone is cleared. `only_newer`: never move the version back (the
    stream may have applied a newer one meanwhile). Inside a transaction."""
    state = key_state_lock(mapping=mapping, key=key)
    if not only_newer or (version is not None and (state.item_version or 0) < version):
        state.item_version = version
    state.deleted = False
    state.save(update_fields=["item_version", "deleted"])
    return state


def key_version_clear(*, mapping: Mapping, key: str) -> KeyState:
    """Record that DynamoDB holds no item of `key` any more (our delete went through), so
    the next legacy write of the key creates it. Inside a transaction."""
    state = key_state_lock(mapping=mapping, key=key)
    state.item_version = None
    state.save(update_fields=["item_version"])
    return state


def key_versions_record(*, mapping: Mapping, keys: list[str], version: int | None) -> None:
    """Record the version of items known to be in DynamoDB (backfill's writes, items found
    holding the row's values): states created where missing, the version set only where
    none was recorded (a version the stream recorded is at least as new)."""
    _states_create(mapping, keys)
    KeyState.objects.filter(mapping=mapping.name, key__in=keys, item_version__isnull=True).update(
        item_version=version, deleted=False
    )


# --- key assignment ---------------------------------------------------------------------


def key_assign(*, mapping: Mapping, pk: object, key: str) -> bool:
    """Give the legacy row `pk` the key `key` if it still has none: the sync's bookkeeping,
    not a legacy edit (the capture triggers skip it). In its own savepoint, so a key that
    another row already holds raises IntegrityError and leaves the caller's transaction
    usable. Returns whether the row was keyed (False: gone, or keyed meanwhile)."""
    unkeyed = Q(**{f"{mapping.key_field}__isnull": True}) | Q(**{mapping.key_field: ""})
    with transaction.atomic():
        sync_writes_mark()
        rows = mapping.get_model().objects.filter(pk=pk).filter(unkeyed)
        return bool(rows.update(**{mapping.key_field: key}))
