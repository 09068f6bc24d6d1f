"""Legacy -> DynamoDB through the outbox, end to end, with the echo coming back."""

from __future__ import annotations

import random
from urllib.parse import quote

import boto3
import pytest
from django.conf import settings

from chefs.dynamo import ChefItem
from chefs.models import Chef
from syncer.models import Conflict, OutboxEntry
from tests.procs import wait_until
from tests.stores import assert_synced, dynamo_rows, log_entries, mysql_rows, stream_records

pytestmark = pytest.mark.e2e


def pending() -> int:
    return OutboxEntry.objects.filter(status="pending").count()


def test_admin_edit_reaches_dynamo_and_its_echo_is_a_no_op(client, staff_user, worker, relay):
    client.force_login(staff_user)
    response = client.post("/admin/chefs/chef/add/", {"first_name": "Alton", "last_name": "Brown"})
    assert response.status_code == 302
    wait_until(lambda: dynamo_rows().get("Brown#Alton") == ("Alton", "Brown"), what="publish")
    chef = wait_until(lambda: Chef.objects.filter(chef_id="Brown#Alton").first(), what="key")
    wait_until(lambda: log_entries(key="Brown#Alton"), what="echo 1")

    response = client.post(
        f"/admin/chefs/chef/{chef.pk}/change/",
        {"first_name": "Alton", "last_name": "Browne", "seen_version": "1"},
    )
    assert response.status_code == 302
    wait_until(lambda: dynamo_rows().get("Brown#Alton") == ("Alton", "Browne"), what="edit")
    wait_until(lambda: len(log_entries(key="Brown#Alton")) == 2, what="echo 2")
    # Exactly one DynamoDB write per legacy write; the echoes wrote nothing back.
    assert [r["eventName"] for r in stream_records("Brown#Alton")] == ["INSERT", "MODIFY"]
    assert OutboxEntry.objects.count() == 2  # the admin's two writes, none from echoes
    assert set(OutboxEntry.objects.values_list("status", flat=True)) == {"published"}
    assert mysql_rows() == {"Brown#Alton": ("Alton", "Browne")}
    assert ChefItem.get("Brown#Alton").version == 2
    assert not Conflict.objects.exists()
    assert_synced()


def test_concurrent_edits_on_both_sides_end_in_a_conflict_and_equal_stores(
    api_client, worker, relay
):
    r = api_client.post("/aurora/chefs", {"firstName": "Alton", "lastName": "Brown"}, format="json")
    assert r.status_code == 201, r.content
    pk = r.json()["id"]
    wait_until(lambda: mysql_rows().get("Brown#Alton"), what="published and echoed")
    wait_until(lambda: pending() == 0, what="outbox drained")

    worker.stop()  # both edits are made before either side's sync runs
    r = api_client.put(
        f"/aurora/chefs/{pk}", {"firstName": "Alton", "lastName": "Legacy"}, format="json"
    )
    assert r.status_code == 200
    url = f"/dynamo/chefs/{quote('Brown#Alton', safe='')}"
    assert api_client.patch(url, {"lastName": "Dynamo"}, format="json").status_code == 200
    worker.start()

    conflict = wait_until(lambda: Conflict.objects.first(), timeout=90, what="conflict")
    assert conflict.legacy_values["lastName"] == "Legacy"
    assert conflict.dynamo_values["lastName"] == "Dynamo"
    wait_until(lambda: pending() == 0, what="outbox drained")
    wait_until(
        lambda: mysql_rows() == dynamo_rows() == {"Brown#Alton": ("Alton", "Dynamo")},
        what="both stores equal, DynamoDB's value kept",
    )
    assert_synced()


def test_lost_publish_task_is_recovered_by_the_sweep(api_client, worker, relay):
    worker.stop()
    r = api_client.post("/aurora/chefs", {"firstName": "Lost", "lastName": "Task"}, format="json")
    assert r.status_code == 201
    sqs = boto3.client("sqs", endpoint_url=settings.AWS_ENDPOINT_URL)
    sqs.purge_queue(QueueUrl=settings.OUTBOX_QUEUE_URL)  # the publish task is gone
    assert pending() == 1
    worker.start()
    wait_until(lambda: dynamo_rows().get("Task#Lost") == ("Lost", "Task"), timeout=60, what="sweep")
    wait_until(lambda: pending() == 0, what="entry published")
    wait_until(lambda: mysql_rows() == dynamo_rows(), what="equal stores")
    assert_synced()


@pytest.mark.slow_e2e
def test_random_edits_over_both_apis_and_the_admin_converge(
    api_client, client, staff_user, worker, relay
):
    rng = random.Random(11)
    client.force_login(staff_user)
    # Each call's status is asserted; where another writer can get there first (a row or
    # item removed by the sync meanwhile), its refusal is one of the allowed answers.
    for n in range(500):
        roll = rng.random()
        rows = list(Chef.objects.values_list("pk", "chef_id"))
        keyed = [r for r in rows if r[1]]
        if roll < 0.25 or not rows:
            r = api_client.post(
                "/dynamo/chefs", {"firstName": f"D{n}", "lastName": "Dyn"}, format="json"
            )
            allowed = {201}
        elif roll < 0.45:
            r = api_client.post(
                "/aurora/chefs", {"firstName": f"L{n}", "lastName": "Leg"}, format="json"
            )
            allowed = {201}
        elif roll < 0.6 and keyed:
            key = rng.choice(keyed)[1]
            r = api_client.patch(
                f"/dynamo/chefs/{quote(key, safe='')}", {"lastName": f"dx{n}"}, format="json"
            )
            allowed = {200, 404}
        elif roll < 0.75:
            pk = rng.choice(rows)[0]
            r = api_client.patch(f"/aurora/chefs/{pk}", {"lastName": f"lx{n}"}, format="json")
            allowed = {200, 404}
        elif roll < 0.85:
            pk = rng.choice(rows)[0]
            r = client.post(
                f"/admin/chefs/chef/{pk}/change/", {"first_name": f"A{n}", "last_name": "Adm"}
            )
            allowed = {302}  # saved (or, for a row gone meanwhile, sent back to the list)
        elif roll < 0.93 and keyed:
            key = rng.choice(keyed)[1]
            r = api_client.delete(f"/dynamo/chefs/{quote(key, safe='')}")
            allowed = {204, 404}
        else:
            pk = rng.choice(rows)[0]
            r = api_client.delete(f"/aurora/chefs/{pk}")
            allowed = {204, 404}
        assert r.status_code in allowed, (n, r.status_code, r.content[:300])

    def converged():
        return pending() == 0 and mysql_rows() == dynamo_rows()

    wait_until(converged, timeout=300, interval=2, what="both stores equal, outbox empty")
    assert None not in mysql_rows()  # every legacy row got its key
    assert not OutboxEntry.objects.filter(status="failed").exists()
    assert_synced()
