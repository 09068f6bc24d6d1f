"""The key-state module: locks, item versions, tombstones, key assignment."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from syncer.models import KeyState
from syncer.store import keystate
from tests.testapp.models import Gadget

pytestmark = pytest.mark.django_db


def make(key, *, sequence=5, version=None, deleted=False):
    return KeyState.objects.create(
        mapping="gadget",
        key=key,
        sequence=sequence,
        item_version=version,
        deleted=deleted,
        applied_at=timezone.now(),
    )


def test_lock_creates_a_missing_state_at_sequence_zero_and_keeps_an_existing_one(
    gadget_mapping,
):
    make("old", sequence=7, version=3)
    with transaction.atomic():
        states = keystate.key_states_lock(mapping=gadget_mapping, keys=["new", "old", "new"])
        one = keystate.key_state_lock(mapping=gadget_mapping, key="other")
    assert sorted(states) == ["new", "old"]
    assert (states["new"].sequence, states["old"].sequence, states["old"].item_version) == (
        0,
        7,
        3,
    )
    assert one.sequence == 0
    assert keystate.key_states_known(mapping=gadget_mapping, keys=["new", "x"]) == {"new"}


def test_version_record_only_newer_never_moves_the_version_back(gadget_mapping):
    make("a", version=5, deleted=True)
    with transaction.atomic():
        keystate.key_version_record(mapping=gadget_mapping, key="a", version=4, only_newer=True)
    s = keystate.key_state_get(mapping=gadget_mapping, key="a")
    assert (s.item_version, s.deleted) == (5, False)  # older: kept; tombstone cleared
    with transaction.atomic():
        keystate.key_version_record(mapping=gadget_mapping, key="a", version=6, only_newer=True)
    assert keystate.key_state_get(mapping=gadget_mapping, key="a").item_version == 6
    with transaction.atomic():
        keystate.key_version_record(mapping=gadget_mapping, key="a", version=1)  # a create
    assert keystate.key_state_get(mapping=gadget_mapping, key="a").item_version == 1


def test_version_clear_and_tombstones(gadget_mapping):
    make("a", version=5)
    make("gone", deleted=True)
    with transaction.atomic():
        keystate.key_version_clear(mapping=gadget_mapping, key="a")
    assert keystate.key_state_get(mapping=gadget_mapping, key="a").item_version is None
    assert keystate.key_states_tombstoned(mapping=gadget_mapping, keys=["a", "gone"]) == {"gone"}


def test_versions_record_keeps_a_version_already_recorded(gadget_mapping):
    make("a", version=5)
    keystate.key_versions_record(mapping=gadget_mapping, keys=["a", "b"], version=1)
    got = dict(KeyState.objects.filter(mapping="gadget").values_list("key", "item_version"))
    assert got == {"a": 5, "b": 1}


def test_key_assign_keys_an_unkeyed_row_once_and_refuses_a_taken_key(gadget_mapping):
    row = Gadget.objects.create(sku=None, name="n")
    Gadget.objects.create(sku="taken", name="t")
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            keystate.key_assign(mapping=gadget_mapping, pk=row.pk, key="taken")
        # The savepoint rolled back: the caller's transaction goes on.
        assert keystate.key_assign(mapping=gadget_mapping, pk=row.pk, key="k1")
    assert not keystate.key_assign(mapping=gadget_mapping, pk=row.pk, key="k2")  # keyed
    row.refresh_from_db()
    assert row.sku == "k1"
