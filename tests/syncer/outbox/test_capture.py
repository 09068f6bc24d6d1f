"""Capture triggers against MariaDB: writes from a plain MySQL client (not Django) get their
outbox entry in their own transaction; the sync's own writes get none; Django's legacy
services go through the same triggers with the version the editor saw."""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction
from django.utils import timezone

from chefs import services
from chefs.dynamo import ChefItem
from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.backfill import backfill_run
from syncer.models import Conflict, KeyState, OutboxEntry
from syncer.outbox import capture
from syncer.outbox.publish import outbox_publish
from syncer.outbox.resync import key_resync
from syncer.outbox.sweep import outbox_sweep
from syncer.pipeline.apply import changes_apply
from syncer.store import marks
from tests.syncer.conftest import gadget_change
from tests.testapp.mapping import GADGET_MAPPING

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_enqueue(monkeypatch):
    # Publishing is driven by the tests (sweep inline); the queue path is covered end to end.
    monkeypatch.setattr("syncer.outbox.record.outbox_enqueue", lambda *, entry_id: None)


@pytest.fixture
def unmarked():
    """Django's connection as production's web process has it: not marked as the sync's
    (the test process marks its connections, see tests/conftest.py)."""
    marks.sync_writes_unmark()
    yield
    marks.sync_writes_mark()


def entries() -> list[tuple]:
    return list(
        OutboxEntry.objects.order_by("pk").values_list("op", "key", "values", "base_version")
    )


def synced(key: str, first: str, last: str, version: int) -> Chef:
    """A row as the sync left it: in MySQL with its key state at `version`."""
    KeyState.objects.create(
        mapping="chef", key=key, sequence=10, item_version=version, applied_at=timezone.now()
    )
    return Chef.objects.create(chef_id=key, first_name=first, last_name=last)


def test_sql_insert_update_delete_are_captured_with_the_synced_base(legacy_sql):
    synced("Row#Synced", "Synced", "Row", 3)
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Direct', 'Insert')")
    legacy_sql("UPDATE cheftable SET cheffirst = 'EditedBySQL' WHERE cheflast = 'Row'")
    legacy_sql("UPDATE cheftable SET cheffirst = 'EditedBySQL' WHERE cheflast = 'Row'")  # no change
    legacy_sql("UPDATE cheftable SET cheffirst = 'editedbysql' WHERE cheflast = 'Row'")  # case only
    legacy_sql("DELETE FROM cheftable WHERE cheflast = 'Row'")
    assert entries() == [
        ("upsert", "", {"firstName": "Direct", "lastName": "Insert"}, None),
        ("upsert", "Row#Synced", {"firstName": "EditedBySQL", "lastName": "Row"}, 3),
        ("upsert", "Row#Synced", {"firstName": "editedbysql", "lastName": "Row"}, 3),
        ("delete", "Row#Synced", {"firstName": "editedbysql", "lastName": "Row"}, 3),
    ]
    direct = Chef.objects.get(last_name="Insert")
    first = OutboxEntry.objects.order_by("pk").first()
    assert first.object_pk == str(direct.pk) and first.status == "pending"
    # No task was enqueued for a foreign writer: its entries are due for the next sweep.
    assert not OutboxEntry.objects.filter(next_attempt_at__isnull=True).exists()


def test_an_uncommitted_sql_write_leaves_neither_row_nor_entry(legacy_sql):
    legacy_sql.conn.autocommit(False)
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Lost', 'Write')")
    legacy_sql.conn.close()  # the writer dies before its commit
    assert not Chef.objects.exists() and not OutboxEntry.objects.exists()


def test_the_second_mapping_has_its_triggers(legacy_sql):
    legacy_sql(
        "INSERT INTO testapp_gadget (sku, name, count, active) VALUES ('g-1', 'Gizmo', 3, 1)"
    )
    legacy_sql("INSERT INTO testapp_gadget (name, count, active) VALUES ('Bare', NULL, 0)")
    got = list(OutboxEntry.objects.order_by("pk").values_list("mapping", "key", "values"))
    assert got == [
        ("gadget", "g-1", {"name": "Gizmo", "count": 3, "active": True}),
        ("gadget", "", {"name": "Bare", "count": None, "active": False}),
    ]
    # JSON booleans, not the column's 1 / 0 (which compare equal to True / False).
    assert [type(values["active"]) for _, _, values in got] == [bool, bool]
    assert capture.triggers_present(table="testapp_gadget") == capture.trigger_names(
        "testapp_gadget"
    )


def test_the_sync_s_own_writes_create_no_entry(aws, legacy_sql, unmarked, gadget_mapping):
    # The apply (stream changes), on a connection nobody marked before.
    result = changes_apply(changes=[gadget_change("g-1", "INSERT", 1, name="Gizmo")])
    assert result.applied == 1 and not OutboxEntry.objects.exists()
    marks.sync_writes_unmark()
    changes_apply(changes=[gadget_change("g-1", "REMOVE", 2)])
    assert not OutboxEntry.objects.exists()

    # A resync from DynamoDB (admin action, reconcile --repair to-mysql).
    ChefItem("Brown#Alton", firstName="Alton", lastName="Brown").save()
    marks.sync_writes_unmark()
    key_resync(mapping=CHEF_MAPPING, key="Brown#Alton")
    assert Chef.objects.get().chef_id == "Brown#Alton"
    assert not OutboxEntry.objects.exists()

    # Backfill: DynamoDB's items loaded, keys given to legacy rows.
    ChefItem("Flay#Bobby", firstName="Bobby", lastName="Flay").save()
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Ina', 'Garten')")
    OutboxEntry.objects.all().delete()  # the SQL insert's own entry
    marks.sync_writes_unmark()
    backfill_run(mapping=CHEF_MAPPING, direction="mysql")
    marks.sync_writes_unmark()
    backfill_run(mapping=CHEF_MAPPING, direction="dynamo")
    assert set(Chef.objects.values_list("chef_id", flat=True)) == {
        "Brown#Alton",
        "Flay#Bobby",
        "Garten#Ina",
    }
    assert not OutboxEntry.objects.exists()


def test_sql_insert_without_a_key_reaches_dynamo_once(aws, legacy_sql, unmarked):
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Direct', 'Insert')")
    assert outbox_sweep(inline=True) == 1
    row = Chef.objects.get()
    assert row.chef_id == "Insert#Direct"  # the key rule, as backfill --to dynamo gives it
    got = ChefItem.get("Insert#Direct", consistent_read=True)
    assert (got.firstName, got.lastName, got.version) == ("Direct", "Insert", 1)
    # Giving the row its key is the sync's write: the entry stays the only one.
    assert list(OutboxEntry.objects.values_list("status", flat=True)) == ["published"]


def test_sql_insert_colliding_with_an_item_is_a_conflict(aws, legacy_sql):
    ChefItem("Insert#Direct", firstName="Someone", lastName="Else").save()
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Direct', 'Insert')")
    outbox_sweep(inline=True)
    assert Conflict.objects.get().kind == Conflict.Kind.KEY_COLLISION
    assert ChefItem.get("Insert#Direct").firstName == "Someone"


def test_sql_update_against_a_stale_view_is_a_conflict(aws, legacy_sql):
    chef = services.chef_create(first_name="Alton", last_name="Brown")
    outbox_publish(entry_id=OutboxEntry.objects.get().pk)
    chef.refresh_from_db()
    assert chef.chef_id == "Brown#Alton"
    # The new API moves the item to version 2; its stream change has not reached MySQL.
    item = ChefItem.get("Brown#Alton")
    item.update(actions=[ChefItem.lastName.set("FromDynamo")])
    legacy_sql("UPDATE cheftable SET cheflast = 'FromSQL' WHERE chef_id = 'Brown#Alton'")
    entry = OutboxEntry.objects.order_by("pk").last()
    assert entry.base_version == 1  # what MySQL last synced for the key
    outbox_sweep(inline=True)
    conflict = Conflict.objects.get()
    assert conflict.kind == Conflict.Kind.STALE_VERSION
    assert conflict.legacy_values == {"firstName": "Alton", "lastName": "FromSQL"}
    assert (conflict.legacy_base_version, conflict.dynamo_version) == (1, 2)
    assert ChefItem.get("Brown#Alton").lastName == "FromDynamo"  # not overwritten
    assert Chef.objects.get().last_name == "FromDynamo"  # MySQL brought back


def test_services_pass_the_seen_version_and_keep_the_connection_s_mark(aws):
    chef = synced("Brown#Alton", "Alton", "Brown", 2)
    services.chef_update(chef=chef, last_name="Edited", seen_version=1)
    services.chef_update(chef=chef, last_name="Edited again")
    assert [e[3] for e in entries()] == [1, 2]  # the older of seen and synced; then synced
    assert OutboxEntry.objects.filter(next_attempt_at__isnull=True).count() == 2  # enqueued
    # The test connection was marked before the service ran: marked again after it.
    Chef.objects.filter(pk=chef.pk).update(first_name="Fixture")
    assert OutboxEntry.objects.count() == 2


def test_services_on_an_unmarked_connection_leave_it_capturing(aws, unmarked):
    with transaction.atomic():
        with capture.legacy_write() as write:
            chef = Chef.objects.create(first_name="Alton", last_name="Brown")
        assert write.entry_id == OutboxEntry.objects.get().pk
    Chef.objects.filter(pk=chef.pk).update(first_name="Raw")  # Django, outside the services
    assert [e[2]["firstName"] for e in entries()] == ["Alton", "Raw"]


# Refused by MySQL 8.0 (or MariaDB-only), and DELIMITER, which no driver sends.
_NOT_PORTABLE = re.compile(
    r"CREATE\s+OR\s+REPLACE|RETURNING|IF\s+NOT\s+EXISTS|uca1400|DELIMITER|NEXTVAL|"
    r"JSON_COMPACT|JSON_DETAILED|:=",
    re.IGNORECASE,
)


@pytest.mark.parametrize("mapping", [CHEF_MAPPING, GADGET_MAPPING], ids=lambda m: m.name)
def test_trigger_sql_is_portable_to_mysql_8(mapping):
    statements = capture.triggers_sql(mapping=mapping) + capture.triggers_drop_sql(
        table=mapping.get_model()._meta.db_table
    )
    for statement in statements:
        assert not _NOT_PORTABLE.search(statement), statement
    assert all(s.startswith("CREATE TRIGGER ") for s in statements[:3])
    assert all(s.startswith("DROP TRIGGER IF EXISTS ") for s in statements[3:])


def test_command_drops_shows_and_installs_the_triggers(legacy_sql):
    from io import StringIO

    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("capture_triggers", "chef", "--drop", "--dry-run", stdout=out)
    assert "DROP TRIGGER IF EXISTS `backsync_cheftable_ai`;" in out.getvalue()
    assert capture.triggers_present(table="cheftable")  # a dry run changes nothing
    try:
        call_command("capture_triggers", "chef", "--drop", stdout=out)
        assert capture.triggers_present(table="cheftable") == []
        assert "chef (cheftable): 0 of 3 present" in out.getvalue()
        legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Not', 'Captured')")
        assert not OutboxEntry.objects.exists()
    finally:
        call_command("capture_triggers", "chef", "--install", stdout=out)
    assert "chef (cheftable): all present" in out.getvalue()
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Is', 'Captured')")
    assert OutboxEntry.objects.count() == 1
    with pytest.raises(CommandError, match="no mapping named"):
        call_command("capture_triggers", "nope")


def test_sql_key_change_is_a_conflict_and_leaves_the_old_item(aws, legacy_sql):
    """Documented limit (README, capture): DynamoDB has no item under the new key."""
    ChefItem("Brown#Alton", firstName="Alton", lastName="Brown").save()
    key_resync(mapping=CHEF_MAPPING, key="Brown#Alton")
    legacy_sql("UPDATE cheftable SET chef_id = 'Other#Key' WHERE chef_id = 'Brown#Alton'")
    outbox_sweep(inline=True)
    conflict = Conflict.objects.get()
    assert (conflict.kind, conflict.key) == (Conflict.Kind.STALE_VERSION, "Other#Key")
    assert conflict.legacy_values == {"firstName": "Alton", "lastName": "Brown"}
    assert not Chef.objects.exists()  # brought to DynamoDB's state: no item "Other#Key"
    assert ChefItem.get("Brown#Alton").lastName == "Brown"


def test_the_migration_operation_drops_and_creates_them():
    from django.db.migrations.loader import MigrationLoader

    state = MigrationLoader(connection).project_state(("chefs", "0005_capture_triggers"))
    operation = capture.CaptureTriggers(mapping="chef")
    try:
        with connection.schema_editor() as editor:
            operation.database_backwards("chefs", editor, state, state)
        assert capture.triggers_present(table="cheftable") == []
    finally:
        with connection.schema_editor() as editor:
            operation.database_forwards("chefs", editor, state, state)
    assert capture.triggers_present(table="cheftable") == capture.trigger_names("cheftable")


def test_the_mark_costs_the_apply_one_statement_per_connection(unmarked, gadget_mapping):
    from django.test.utils import CaptureQueriesContext

    counts = []
    for seq in (1, 2, 3):
        with CaptureQueriesContext(connection) as queries:
            changes_apply(changes=[gadget_change(f"g-{seq}", "INSERT", seq)])
        counts.append(sum("@backsync_sync" in q["sql"] for q in queries.captured_queries))
    assert counts == [1, 0, 0]
    assert not OutboxEntry.objects.exists()
    # A new database connection has no mark: the next batch sets it again. (Without the
    # test process's own marking of new connections, tests/conftest.py.)
    from django.db.backends.signals import connection_created

    from tests.conftest import _mark_test_connection

    connection_created.disconnect(dispatch_uid="backsync-tests-sync-mark")
    try:
        connection.close()
        connection.ensure_connection()
        with CaptureQueriesContext(connection) as queries:
            changes_apply(changes=[gadget_change("g-4", "INSERT", 4)])
    finally:
        connection_created.connect(_mark_test_connection, dispatch_uid="backsync-tests-sync-mark")
    assert sum("@backsync_sync" in q["sql"] for q in queries.captured_queries) == 1
    assert not OutboxEntry.objects.exists()
