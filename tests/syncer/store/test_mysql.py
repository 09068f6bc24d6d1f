"""The MySQL writer's one guard, driven directly (the gadget mapping, no stream, no AWS)."""

import pytest

from syncer.models import KeyState
from syncer.store.mysql import OLDER, TOMBSTONE, UNORDERED, Guard, RowChange, rows_write
from tests.testapp.models import Gadget

pytestmark = pytest.mark.django_db


def change(key, seq=0, *, name="g", version=None, removed=False):
    row = None if removed else {"name": name, "count": 1, "active": True}
    return RowChange(key=key, row=row, version=version, seq=seq)


def write(*changes, guard=Guard.SEQUENCE, log=None):
    from syncer.registry import registry

    return rows_write(mapping=registry.get("gadget"), changes=list(changes), guard=guard, log=log)


def names():
    return dict(Gadget.objects.values_list("sku", "name"))


def state(key):
    return KeyState.objects.get(mapping="gadget", key=key)


# --- Guard.SEQUENCE (the stream) ------------------------------------------------------------


def test_sequence_a_stale_or_equal_sequence_changes_nothing(gadget_mapping):
    assert len(write(change("a", 10, name="ten")).winners) == 1
    assert write(change("a", 9, name="nine")).winners == []
    assert write(change("a", 10, name="again")).winners == []  # equal: the first applied wins
    assert names() == {"a": "ten"}
    s = state("a")
    assert (s.sequence, s.previous_sequence) == (10, 10)


def test_sequence_the_newest_change_of_a_batch_wins(gadget_mapping):
    newest = change("a", 12, name="twelve")
    written = write(change("a", 11, name="eleven"), newest, change("a", 5, name="five"))
    assert written.winners == [newest]
    assert names() == {"a": "twelve"}
    assert state("a").sequence == 12


def test_sequence_a_tombstone_keeps_an_older_change_out(gadget_mapping):
    write(change("a", 10, version=1))
    write(change("a", 12, removed=True))
    assert names() == {}
    s = state("a")
    assert s.deleted and s.sequence == 12 and s.item_version is None
    assert write(change("a", 11, name="late")).winners == []  # no resurrection
    assert names() == {}
    assert state("a").deleted and state("a").sequence == 12  # the tombstone stays
    assert len(write(change("a", 13, name="back", version=2)).winners) == 1  # re-created
    assert names() == {"a": "back"}
    s = state("a")
    assert not s.deleted and s.item_version == 2


def test_sequence_log_statements_ride_with_the_row_writes(gadget_mapping):
    seen = []

    def log(winners):
        seen.append([w.key for w in winners])
        return ["DO 1"]

    write(change("b", 2), change("a", 1), log=log)
    assert seen == [["a", "b"]]


# --- Guard.VERSION (backfill) ---------------------------------------------------------------


def test_version_an_older_or_equal_version_changes_nothing(gadget_mapping):
    assert len(write(change("a", version=5, name="five"), guard=Guard.VERSION).winners) == 1
    for version in (4, 5):
        written = write(change("a", version=version, name="old"), guard=Guard.VERSION)
        assert (written.winners, written.skipped) == ([], {"a": OLDER})
    assert names() == {"a": "five"}
    written = write(change("a", version=6, name="six"), guard=Guard.VERSION)
    assert written.skipped == {} and names() == {"a": "six"}
    s = state("a")
    assert (s.item_version, s.sequence, s.deleted) == (6, 0, False)  # sequence untouched


def test_version_never_writes_over_a_tombstone(gadget_mapping):
    write(change("a", 7, removed=True))  # the stream removed it after the scan read it
    written = write(change("a", version=99, name="scanned"), guard=Guard.VERSION)
    assert written.skipped == {"a": TOMBSTONE}
    assert names() == {}
    assert state("a").deleted


def test_version_an_unversioned_item_lands_only_for_a_key_never_seen(gadget_mapping):
    written = write(change("new", name="first"), guard=Guard.VERSION)
    assert [w.key for w in written.winners] == ["new"]
    written = write(change("new", name="second"), guard=Guard.VERSION)
    assert written.skipped == {"new": UNORDERED}
    assert names() == {"new": "first"}


def test_version_does_not_overwrite_what_a_newer_stream_change_wrote(gadget_mapping):
    write(change("a", 20, name="stream", version=3))
    written = write(change("a", version=2, name="scan"), guard=Guard.VERSION)
    assert written.skipped == {"a": OLDER}
    assert names() == {"a": "stream"}


# --- Guard.CURRENT (resync: the caller read DynamoDB's current item under the key lock) ---


def test_current_writes_the_item_and_removes_a_gone_key(gadget_mapping):
    write(change("a", 30, name="stream", version=9))
    written = write(change("a", version=4, name="current"), guard=Guard.CURRENT)
    assert len(written.winners) == 1
    assert names() == {"a": "current"}
    s = state("a")
    assert (s.item_version, s.sequence, s.deleted) == (4, 30, False)
    write(change("a", removed=True), guard=Guard.CURRENT)
    assert names() == {}
    s = state("a")
    assert (s.item_version, s.sequence, s.deleted) == (None, 30, True)
    # The stream's order is untouched: only a newer sequence applies after the resync.
    assert write(change("a", 30, name="stale")).winners == []
    assert len(write(change("a", 31, name="newer")).winners) == 1
