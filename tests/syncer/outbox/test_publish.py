"""The outbox against moto and MariaDB: publishing, conflicts, echo, idempotence, sweep."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from chefs import services
from chefs.dynamo import ChefItem
from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.models import Conflict, KeyState, OutboxEntry
from syncer.outbox.publish import outbox_publish
from syncer.outbox.sweep import outbox_sweep
from syncer.pipeline.apply import changes_apply

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_enqueue(monkeypatch):
    # These tests drive publishing themselves; the queue path is covered end to end.
    monkeypatch.setattr("syncer.outbox.record.outbox_enqueue", lambda *, entry_id: None)


def publish_all() -> list[str]:
    return [outbox_publish(entry_id=e.pk) for e in OutboxEntry.objects.filter(status="pending")]


def item(key):
    try:
        return ChefItem.get(key, consistent_read=True)
    except ChefItem.DoesNotExist:
        return None


def echo(key: str, seq: int, *, event="MODIFY"):
    """The stream record a DynamoDB write causes, as the handler would send it."""
    it = item(key)
    image = None
    if it is not None:
        image = {
            "ChefId": {"S": it.ChefId},
            "firstName": {"S": it.firstName},
            "lastName": {"S": it.lastName},
            "version": {"N": str(it.version)},
        }
    return {
        "id": f"echo-{seq}",
        "table": "chef",
        "event": event if it is not None else "REMOVE",
        "seq": str(seq),
        "keys": {"ChefId": {"S": key}},
        "image": image,
        "ts": 1_700_000_000.0,
    }


def test_create_is_published_with_the_key_rule(aws):
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    assert OutboxEntry.objects.get().status == "pending"
    assert publish_all() == ["published"]
    chef.refresh_from_db()
    assert chef.chef_id == "Brown#Alton"
    it = item("Brown#Alton")
    assert (it.firstName, it.lastName, it.version) == ("Alton", "Brown", 1)
    assert KeyState.objects.get(key="Brown#Alton").item_version == 1


def test_publishing_twice_writes_once(aws):
    services.chef_create(first_name="Alton", last_name="Brown")
    entry = OutboxEntry.objects.get()
    assert outbox_publish(entry_id=entry.pk) == "published"
    assert outbox_publish(entry_id=entry.pk) == "noop"
    # A publish that wrote but died before recording it: the retry recognises its write.
    OutboxEntry.objects.filter(pk=entry.pk).update(status="pending")
    assert outbox_publish(entry_id=entry.pk) == "published"
    assert item("Brown#Alton").version == 1
    assert not Conflict.objects.exists()


def test_update_and_its_echo_is_a_no_op(aws):
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    publish_all()
    changes_apply(changes=[echo("Brown#Alton", 100, event="INSERT")])
    chef.refresh_from_db()
    services.chef_update(chef=chef, last_name="Browne")
    assert publish_all() == ["published"]
    assert item("Brown#Alton").lastName == "Browne" and item("Brown#Alton").version == 2
    entries_before = OutboxEntry.objects.count()
    result = changes_apply(changes=[echo("Brown#Alton", 101)])
    assert result.applied == 1  # bookkeeping only: the row already has these values
    assert OutboxEntry.objects.count() == entries_before  # the echo records no outbox entry
    assert Chef.objects.get().last_name == "Browne"
    assert KeyState.objects.get(key="Brown#Alton").item_version == 2


def test_pending_edits_of_one_row_publish_as_one_write(aws):
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    publish_all()
    for name in ["B1", "B2", "B3"]:
        services.chef_update(chef=chef, last_name=name)
    results = publish_all()
    assert results.count("published") == 1 and results.count("noop") == 2
    it = item("Brown#Alton")
    assert (it.lastName, it.version) == ("B3", 2)


def test_stale_legacy_edit_is_a_conflict_and_dynamo_wins(aws):
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    publish_all()
    # DynamoDB moves on (the new API) before the legacy edit is published.
    it = item("Brown#Alton")
    it.update(actions=[ChefItem.lastName.set("FromDynamo")])
    chef.refresh_from_db()
    services.chef_update(chef=chef, last_name="FromLegacy")
    assert publish_all() == ["conflict"]
    conflict = Conflict.objects.get()
    assert conflict.kind == Conflict.Kind.STALE_VERSION
    assert conflict.legacy_values == {"firstName": "Alton", "lastName": "FromLegacy"}
    assert conflict.dynamo_values == {"firstName": "Alton", "lastName": "FromDynamo"}
    assert (conflict.legacy_base_version, conflict.dynamo_version) == (1, 2)
    assert Chef.objects.get().last_name == "FromDynamo"  # MySQL brought back
    assert item("Brown#Alton").lastName == "FromDynamo"


def test_edit_from_a_stale_form_is_a_conflict(aws):
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    publish_all()
    item("Brown#Alton").update(actions=[ChefItem.lastName.set("Newer")])
    changes_apply(changes=[echo("Brown#Alton", 200)])  # MySQL mirrors version 2
    chef.refresh_from_db()
    services.chef_update(chef=chef, last_name="Edited", seen_version=1)
    assert publish_all() == ["conflict"]
    assert Chef.objects.get().last_name == "Newer"


def test_key_collision_with_an_existing_item(aws):
    ChefItem("Brown#Alton", firstName="Other", lastName="Person").save()
    services.chef_create(first_name="Alton", last_name="Brown")
    assert publish_all() == ["conflict"]
    assert Conflict.objects.get().kind == Conflict.Kind.KEY_COLLISION
    row = Chef.objects.get()
    assert (row.chef_id, row.first_name) == ("Brown#Alton", "Other")
    assert item("Brown#Alton").firstName == "Other"


def test_key_collision_with_another_legacy_row(aws):
    services.chef_create(first_name="Alton", last_name="Brown")
    publish_all()
    services.chef_create(first_name="Alton", last_name="Brown")
    assert publish_all() == ["conflict"]
    assert Chef.objects.filter(chef_id__isnull=True).count() == 1
    assert Conflict.objects.get().kind == Conflict.Kind.KEY_COLLISION


def test_delete_is_published_and_stale_delete_is_a_conflict(aws):
    a = services.chef_create(first_name="A", last_name="One")
    b = services.chef_create(first_name="B", last_name="Two")
    publish_all()
    services.chef_delete(chef=Chef.objects.get(pk=a.pk))
    assert publish_all() == ["published"]
    assert item("One#A") is None
    item("Two#B").update(actions=[ChefItem.firstName.set("Bee")])
    services.chef_delete(chef=Chef.objects.get(pk=b.pk))
    assert publish_all() == ["conflict"]
    assert item("Two#B").firstName == "Bee"
    assert Chef.objects.get(chef_id="Two#B").first_name == "Bee"  # row restored


def test_dynamo_down_counts_attempts_then_fails_visibly(aws, settings, moto_server):
    settings.OUTBOX_MAX_ATTEMPTS = 2
    services.chef_create(first_name="Alton", last_name="Brown")
    entry = OutboxEntry.objects.get()
    moto_server.reset()  # table gone: DynamoDB refuses the write
    assert outbox_publish(entry_id=entry.pk) == "retry"
    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == ("pending", 1)
    assert entry.next_attempt_at is not None and "ResourceNotFound" in entry.last_error
    OutboxEntry.objects.filter(pk=entry.pk).update(next_attempt_at=entry.created_at)
    outbox_sweep(inline=True)
    entry.refresh_from_db()
    assert (entry.status, entry.attempts) == ("failed", 2)


def test_sweep_publishes_entries_whose_task_was_lost(aws, settings):
    settings.OUTBOX_LOST_AFTER_SECONDS = 60
    with transaction.atomic():
        services.chef_create(first_name="Alton", last_name="Brown")
    assert outbox_sweep(inline=True) == 0  # its task may still be on its way
    OutboxEntry.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert outbox_sweep(inline=True) == 1
    assert OutboxEntry.objects.get().status == "published"
    assert item("Brown#Alton") is not None


def test_sweep_enqueues_a_pending_row_once_per_period(aws, settings, monkeypatch):
    settings.OUTBOX_LOST_AFTER_SECONDS = 60
    enqueued = []
    monkeypatch.setattr(
        "syncer.outbox.record.outbox_enqueue", lambda *, entry_id: enqueued.append(entry_id)
    )
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    services.chef_update(chef=chef, last_name="B2")
    OutboxEntry.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert outbox_sweep() == 1  # one publish per legacy row, not per entry
    assert outbox_sweep() == 0  # not again while its task may still be queued
    assert len(enqueued) == 1


def test_outbox_record_needs_a_transaction(aws):
    from syncer.outbox.record import outbox_record

    chef = Chef.objects.create(first_name="A", last_name="B")
    # pytest-django's test transaction counts as one; pretend it is not there.
    connection = transaction.get_connection()
    connection.in_atomic_block = False
    try:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            outbox_record(mapping=CHEF_MAPPING, instance=chef, op="upsert")
    finally:
        connection.in_atomic_block = True


def test_sweep_command(aws, settings):
    from io import StringIO

    from django.core.management import call_command

    settings.OUTBOX_LOST_AFTER_SECONDS = 60
    services.chef_create(first_name="Alton", last_name="Brown")
    OutboxEntry.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    out = StringIO()
    call_command("outbox_sweep", "--dry-run", stdout=out)
    assert "1 outbox entr(y/ies) due" in out.getvalue()
    assert OutboxEntry.objects.get().status == "pending"
    call_command("outbox_sweep", "--inline", stdout=out)
    assert "1 legacy row(s) published again" in out.getvalue()
    assert OutboxEntry.objects.get().status == "published"
    assert item("Brown#Alton").lastName == "Brown"


def test_publisher_dying_after_its_write_leaves_one_row(aws, monkeypatch):
    """The create reached DynamoDB, then the publisher died before recording it: the echo
    must land on the legacy row (its key was committed first), and the retry must see its
    own write instead of a conflict."""
    import syncer.outbox.publish as outbox

    chef = services.chef_create(first_name="Alton", last_name="Brown")
    real_mark = outbox._mark

    def die(*args, **kwargs):
        raise KeyboardInterrupt("publisher killed")

    monkeypatch.setattr(outbox, "_mark", die)
    with pytest.raises(KeyboardInterrupt):
        publish_all()
    monkeypatch.setattr(outbox, "_mark", real_mark)
    assert item("Brown#Alton").version == 1  # the write happened
    assert OutboxEntry.objects.get().status == "pending"  # its record did not

    changes_apply(changes=[echo("Brown#Alton", 300, event="INSERT")])
    assert list(Chef.objects.values_list("pk", "chef_id")) == [(chef.pk, "Brown#Alton")]

    assert publish_all() == ["published"]
    assert item("Brown#Alton").version == 1  # written once
    assert not Conflict.objects.exists()
    assert Chef.objects.count() == 1
