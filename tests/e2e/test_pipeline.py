"""DynamoDB -> stream -> relay -> SQS FIFO -> real celery worker -> MySQL, end to end."""

from __future__ import annotations

from urllib.parse import quote

import boto3
import pytest
from django.conf import settings

from chefs.models import Chef
from syncer.models import FailedChange
from syncer.pipeline.failed import failed_change_replay
from tests.procs import wait_until
from tests.stores import assert_synced, dynamo_rows, mysql_rows, reconcile_drift

pytestmark = pytest.mark.e2e


def test_crud_through_the_new_api_reaches_mysql(api_client, worker, relay):
    r = api_client.post("/dynamo/chefs", {"firstName": "Bobby", "lastName": "Flay"}, format="json")
    assert r.status_code == 201, r.content
    wait_until(lambda: mysql_rows().get("Flay#Bobby") == ("Bobby", "Flay"), what="INSERT")

    url = f"/dynamo/chefs/{quote('Flay#Bobby', safe='')}"
    assert api_client.patch(url, {"lastName": "Flay Jr"}, format="json").status_code == 200
    wait_until(lambda: mysql_rows().get("Flay#Bobby") == ("Bobby", "Flay Jr"), what="MODIFY")

    assert api_client.delete(url).status_code == 204
    wait_until(lambda: "Flay#Bobby" not in mysql_rows(), what="REMOVE")

    r = api_client.post(
        "/dynamo/chefs",
        {"chefId": "Flay#Bobby", "firstName": "Bobby", "lastName": "Again"},
        format="json",
    )
    assert r.status_code == 201
    wait_until(lambda: mysql_rows().get("Flay#Bobby") == ("Bobby", "Again"), what="re-create")
    assert Chef.objects.filter(chef_id="Flay#Bobby").count() == 1
    assert_synced()


def test_poison_change_is_isolated_and_replayable(worker, relay):
    client = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    for i in range(5):
        item = {"ChefId": {"S": f"Good#{i}"}, "firstName": {"S": "G"}, "lastName": {"S": str(i)}}
        client.put_item(TableName="chef", Item=item)
        if i == 2:
            poison = {"ChefId": {"S": "Bad#1"}, "firstName": {"N": "42"}, "lastName": {"S": "x"}}
            client.put_item(TableName="chef", Item=poison)
    wait_until(lambda: len(mysql_rows()) == 5, what="the good changes")
    failed = wait_until(lambda: list(FailedChange.objects.all()), what="the failed change")
    assert len(failed) == 1
    assert failed[0].key == "Bad#1" and "expected type S, got N" in failed[0].error
    assert "Bad#1" not in mysql_rows()

    # The operator fixes the payload and replays it through the same apply service.
    fixed = failed[0]
    fixed.payload = {**fixed.payload, "image": {**fixed.payload["image"], "firstName": {"S": "42"}}}
    fixed.save()
    result = failed_change_replay(failed_change=fixed)
    assert result.applied == 1
    assert mysql_rows()["Bad#1"] == ("42", "x")
    fixed.refresh_from_db()
    assert fixed.status == FailedChange.Status.REPLAYED
    # DynamoDB still holds the bad value: reconcile reports that key, and only that one,
    # until the item itself is fixed.
    report = reconcile_drift()
    assert (report.drift, report.mappings[0].samples["different"][0]["key"]) == (1, "Bad#1")
    client.put_item(TableName="chef", Item={**poison, "firstName": {"S": "42"}})
    wait_until(lambda: mysql_rows()["Bad#1"] == ("42", "x") == dynamo_rows()["Bad#1"])
    assert_synced()
