"""Legacy writes that bypass Django (plain SQL) reach DynamoDB through the capture triggers,
with a real worker (publish, sweep, apply of the echoes) and the relay."""

from __future__ import annotations

import io
import random
from urllib.parse import quote

import pytest
from django.core.management import call_command

from chefs.dynamo import ChefItem
from chefs.models import Chef
from syncer.models import Conflict, OutboxEntry
from tests.procs import wait_until
from tests.stores import dynamo_rows, log_entries, mysql_rows

pytestmark = pytest.mark.e2e


def pending() -> int:
    return OutboxEntry.objects.filter(status="pending").count()


def reconcile_code() -> int:
    try:
        call_command("reconcile", stdout=io.StringIO())
    except SystemExit as exc:
        return exc.code
    return 0


def test_mixed_writes_with_sql_on_the_legacy_side_end_in_sync(
    api_client, client, staff_user, legacy_sql, worker, relay
):
    client.force_login(staff_user)
    # New side (API) and legacy side (API, admin), as before.
    api_client.post("/dynamo/chefs", {"firstName": "Bobby", "lastName": "Flay"}, format="json")
    api_client.post("/aurora/chefs", {"firstName": "Alton", "lastName": "Brown"}, format="json")
    client.post("/admin/chefs/chef/add/", {"first_name": "Ina", "last_name": "Garten"})
    wait_until(
        lambda: set(mysql_rows()) == {"Flay#Bobby", "Brown#Alton", "Garten#Ina"}, what="synced"
    )

    # Plain SQL, as in the issue: an insert without a key and an edit of a synced row.
    legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES ('Direct', 'Insert')")
    legacy_sql("UPDATE cheftable SET cheffirst = 'EditedBySQL' WHERE chef_id = 'Flay#Bobby'")
    wait_until(
        lambda: (
            dynamo_rows().get("Insert#Direct") == ("Direct", "Insert")
            and dynamo_rows().get("Flay#Bobby") == ("EditedBySQL", "Flay")
        ),
        what="SQL insert and update in DynamoDB",
    )
    legacy_sql("DELETE FROM cheftable WHERE chef_id = 'Brown#Alton'")
    wait_until(lambda: "Brown#Alton" not in dynamo_rows(), what="SQL delete in DynamoDB")

    # More of both sides after the SQL writes.
    url = f"/dynamo/chefs/{quote('Insert#Direct', safe='')}"
    assert api_client.patch(url, {"lastName": "FromApi"}, format="json").status_code == 200
    legacy_sql("UPDATE cheftable SET cheflast = 'Gartner' WHERE chef_id = 'Garten#Ina'")

    wait_until(
        lambda: (
            pending() == 0
            and mysql_rows()
            == dynamo_rows()
            == {
                "Flay#Bobby": ("EditedBySQL", "Flay"),
                "Insert#Direct": ("Direct", "FromApi"),
                "Garten#Ina": ("Ina", "Gartner"),
            }
        ),
        timeout=90,
        what="pipeline drained, stores equal",
    )
    # Every echo applied without writing anything back: one entry per legacy write.
    wait_until(lambda: len(log_entries(key="Garten#Ina")) >= 2, what="echo")
    assert OutboxEntry.objects.count() == 6
    assert set(OutboxEntry.objects.values_list("status", flat=True)) == {"published"}
    assert not Conflict.objects.exists()
    assert reconcile_code() == 0


def test_sql_update_against_a_stale_view_is_a_conflict(api_client, legacy_sql, worker, relay):
    api_client.post("/dynamo/chefs", {"firstName": "Alton", "lastName": "Brown"}, format="json")
    wait_until(lambda: mysql_rows().get("Brown#Alton"), what="synced to MySQL")

    worker.stop()  # the new API's edit has not reached MySQL when the SQL edit is made
    item = ChefItem.get("Brown#Alton")
    item.update(actions=[ChefItem.lastName.set("FromDynamo")])
    legacy_sql("UPDATE cheftable SET cheflast = 'FromSQL' WHERE chef_id = 'Brown#Alton'")
    worker.start()

    conflict = wait_until(lambda: Conflict.objects.first(), timeout=90, what="conflict")
    assert conflict.kind == Conflict.Kind.STALE_VERSION
    assert conflict.legacy_values["lastName"] == "FromSQL"
    assert conflict.dynamo_values["lastName"] == "FromDynamo"
    wait_until(
        lambda: (
            pending() == 0
            and mysql_rows() == dynamo_rows() == {"Brown#Alton": ("Alton", "FromDynamo")}
        ),
        what="DynamoDB's value kept on both sides",
    )
    assert reconcile_code() == 0


def test_random_mix_of_writes_with_sql_drains_to_a_clean_reconcile(
    api_client, client, staff_user, legacy_sql, worker, relay
):
    """Any mix: the legacy API, the admin and plain SQL on the legacy side, the new API on
    the other, on overlapping rows; once drained, reconcile finds nothing."""
    rng = random.Random(20)
    client.force_login(staff_user)
    for n in range(4):  # rows on both sides to start from
        api_client.post("/dynamo/chefs", {"firstName": f"D{n}", "lastName": "Seed"}, format="json")
        legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES (%s, 'Seed')", (f"S{n}",))
    wait_until(lambda: len(dynamo_rows()) == len(mysql_rows()) == 8, what="seed rows synced")
    ops: list[str] = []
    for n in range(10, 90):
        rows = list(Chef.objects.values_list("pk", "chef_id"))
        keyed = [r for r in rows if r[1]]
        roll = rng.random()
        if roll < 0.2 or not rows:
            ops.append("new-API post")
            api_client.post(
                "/dynamo/chefs", {"firstName": f"D{n}", "lastName": "Dyn"}, format="json"
            )
        elif roll < 0.3:
            ops.append("legacy-API post")
            api_client.post(
                "/aurora/chefs", {"firstName": f"L{n}", "lastName": "Leg"}, format="json"
            )
        elif roll < 0.45:
            ops.append("SQL insert")
            legacy_sql("INSERT INTO cheftable (cheffirst, cheflast) VALUES (%s, 'Sql')", (f"S{n}",))
        elif roll < 0.6:
            ops.append("SQL update")
            legacy_sql(
                "UPDATE cheftable SET cheflast = %s WHERE id = %s",
                (f"sx{n}", rng.choice(rows)[0]),
            )
        elif roll < 0.7 and keyed:
            ops.append("new-API patch")
            key = rng.choice(keyed)[1]
            api_client.patch(
                f"/dynamo/chefs/{quote(key, safe='')}", {"lastName": f"dx{n}"}, format="json"
            )
        elif roll < 0.8:
            ops.append("admin edit")
            pk = rng.choice(rows)[0]
            client.post(
                f"/admin/chefs/chef/{pk}/change/", {"first_name": f"A{n}", "last_name": "Adm"}
            )
        elif roll < 0.9:
            ops.append("SQL delete")
            legacy_sql("DELETE FROM cheftable WHERE id = %s", (rng.choice(rows)[0],))
        elif keyed:
            ops.append("new-API delete")
            api_client.delete(f"/dynamo/chefs/{quote(rng.choice(keyed)[1], safe='')}")

    # Every kind of write happened, several times.
    assert {op: ops.count(op) >= 3 for op in set(ops)} == dict.fromkeys(ops, True), ops
    assert len(set(ops)) == 8
    wait_until(
        lambda: pending() == 0 and mysql_rows() == dynamo_rows(),
        timeout=240,
        interval=2,
        what="both stores equal, outbox empty",
    )
    assert None not in mysql_rows()  # every SQL-inserted row got its key
    assert not OutboxEntry.objects.filter(status="failed").exists()
    assert reconcile_code() == 0
