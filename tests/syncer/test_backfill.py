"""manage.py backfill: batched, throttled, resumable loads in both directions."""

from __future__ import annotations

import io
import sys

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.aws import dynamodb_client
from syncer.backfill import Throttle, backfill_run
from syncer.models import BackfillCheckpoint, KeyState
from tests.procs import ManagedProcess, wait_until


def put_items(n: int, *, start: int = 0, version: int = 1) -> None:
    client = dynamodb_client()
    for i in range(start, start + n, 25):
        client.batch_write_item(
            RequestItems={
                "chef": [
                    {
                        "PutRequest": {
                            "Item": {
                                "ChefId": {"S": f"Last{j}#First{j}"},
                                "firstName": {"S": f"First{j}"},
                                "lastName": {"S": f"Last{j}"},
                                "version": {"N": str(version)},
                            }
                        }
                    }
                    for j in range(i, min(i + 25, start + n))
                ]
            }
        )


def dynamo_items() -> dict[str, dict]:
    out, kwargs = {}, {"TableName": "chef", "ConsistentRead": True}
    while True:
        page = dynamodb_client().scan(**kwargs)
        out.update({i["ChefId"]["S"]: i for i in page["Items"]})
        if "LastEvaluatedKey" not in page:
            return out
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_to_mysql_loads_every_item_once_in_batches(db, aws):
    put_items(30)
    dynamodb_client().put_item(
        TableName="chef", Item={"ChefId": {"S": "Bad"}, "firstName": {"N": "1"}}
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_:  # the item the mapping refuses failed: 1
        call_command("backfill", "--to", "mysql", "--batch-size", "7", stdout=out, stderr=err)
    assert exit_.value.code == 1
    assert Chef.objects.count() == 30
    assert Chef.objects.get(chef_id="Last3#First3").first_name == "First3"
    assert set(KeyState.objects.values_list("item_version", flat=True)) == {1}
    text = out.getvalue()
    assert "31 read, 30 written, 0 already current, 0 kept" in text and "1 failed" in text
    assert "  failed: {'key': 'Bad', 'error': 'firstName: expected type S, got N'" in text
    assert "chef: 1 item(s) failed (first ones above); exit status 1" in text
    # Progress (stderr, not a terminal): the line at the end of the phase, with the total.
    assert "chef -> mysql: 31/~31 items (100%)" in err.getvalue()

    with pytest.raises(CommandError, match="pass --restart"):
        call_command("backfill", "--to", "mysql", stdout=io.StringIO())
    put_items(5, start=0, version=2)  # newer versions of five items
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("backfill", "--to", "mysql", "--restart", stdout=out)
    assert "31 read, 5 written, 25 already current, 0 kept" in out.getvalue()
    assert Chef.objects.count() == 30  # no duplicates
    assert KeyState.objects.filter(item_version=2).count() == 5


def test_to_mysql_leaves_newer_state_and_tombstones_alone(db, aws):
    put_items(3)
    now = timezone.now()
    Chef.objects.create(chef_id="Last0#First0", first_name="Newer", last_name="Last0")
    KeyState.objects.create(
        mapping="chef", key="Last0#First0", sequence=5, item_version=4, applied_at=now
    )
    KeyState.objects.create(
        mapping="chef", key="Last1#First1", sequence=6, deleted=True, applied_at=now
    )
    result = backfill_run(mapping=CHEF_MAPPING, direction="mysql")
    assert (result.read, result.written, result.skipped) == (3, 1, 2)
    assert dict(Chef.objects.values_list("chef_id", "first_name")) == {
        "Last0#First0": "Newer",
        "Last2#First2": "First2",
    }


def test_to_dynamo_keys_legacy_rows_and_never_overwrites(db, aws):
    put_items(1)  # Last0#First0 exists in DynamoDB already, with other values
    Chef.objects.create(first_name="First0", last_name="Last0")  # same key by the rule
    Chef.objects.create(first_name="Alton", last_name="Brown")
    Chef.objects.create(first_name="Alton", last_name="Brown")  # collides with the one above
    Chef.objects.create(first_name=None, last_name="Nameless")  # the mapping cannot carry it
    Chef.objects.create(chef_id="Flay#Bobby", first_name="Bobby", last_name="Flay")
    dynamodb_client().update_item(
        TableName="chef",
        Key={"ChefId": {"S": "Last0#First0"}},
        UpdateExpression="SET firstName = :f",
        ExpressionAttributeValues={":f": {"S": "Changed"}},
    )

    result = backfill_run(mapping=CHEF_MAPPING, direction="dynamo", batch_size=2)

    assert (result.read, result.keyed, result.written) == (5, 2, 2)
    assert result.skipped == 3  # the existing item, the key collision, the nameless row
    items = dynamo_items()
    assert set(items) == {"Last0#First0", "Brown#Alton", "Flay#Bobby"}
    assert items["Last0#First0"]["firstName"] == {"S": "Changed"}  # not overwritten
    assert items["Brown#Alton"]["version"] == {"N": "1"}
    assert KeyState.objects.get(key="Brown#Alton").item_version == 1
    assert list(Chef.objects.filter(chef_id__isnull=True).values_list("last_name", flat=True)) == [
        "Brown",
        "Nameless",
    ]
    assert (result.kept, result.failed) == (1, 2)
    errors = " ".join(s["error"] for s in result.samples["failed"])
    assert "key already held by another row" in errors and "firstName: missing" in errors
    checkpoint = BackfillCheckpoint.objects.get(mapping="chef", direction="dynamo")
    assert checkpoint.finished and checkpoint.items_read == 5


def test_throttle_keeps_the_average_rate():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    throttle = Throttle(100, sleep=sleep, clock=lambda: now[0])
    for _ in range(10):
        throttle.wait(50)  # 500 items at 100/s: 5 s in all
    assert now[0] == pytest.approx(5.0)
    assert Throttle(None, sleep=sleep).wait(10) is None


def test_bad_options_are_command_errors(db):
    with pytest.raises(CommandError, match="no mapping named"):
        call_command("backfill", "nosuch", "--to", "mysql")
    with pytest.raises(CommandError, match="rate must be positive"):
        call_command("backfill", "--to", "mysql", "--rate", "0")


@pytest.mark.e2e
def test_killed_backfill_resumes_without_duplicates(stack_env, tmp_path):
    """SIGKILL a running backfill --to dynamo of 400 legacy rows; a second run finishes."""
    Chef.objects.bulk_create(
        [Chef(first_name=f"F{i}", last_name=f"L{i}") for i in range(400)], batch_size=500
    )
    argv = [sys.executable, "manage.py", "backfill", "--to", "dynamo", "--batch-size", "20"]
    first = ManagedProcess("backfill", [*argv, "--rate", "150"], env=stack_env, log_dir=tmp_path)
    first.start()

    def progress() -> int:
        cp = BackfillCheckpoint.objects.filter(mapping="chef", direction="dynamo").first()
        return cp.items_read if cp else 0

    wait_until(lambda: progress() >= 100, timeout=60, what="backfill progress")
    first.kill()
    checkpoint = BackfillCheckpoint.objects.get(mapping="chef", direction="dynamo")
    assert not checkpoint.finished and checkpoint.items_read < 400, first.log_tail()

    second = ManagedProcess("backfill2", argv, env=stack_env, log_dir=tmp_path).start()
    assert second.proc.wait(timeout=120) == 0, second.log_tail()
    assert "(resumed)" in second.log_tail()

    items = dynamo_items()
    keys = list(Chef.objects.values_list("chef_id", flat=True))
    assert len(keys) == 400 and None not in keys and len(set(keys)) == 400
    assert set(items) == set(keys)
    assert {i["version"]["N"] for i in items.values()} == {"1"}
    assert KeyState.objects.filter(mapping="chef", item_version=1).count() == 400


@pytest.mark.django_db
def test_existing_items_with_the_rows_values_get_their_version_recorded(aws):
    """A run killed after its BatchWriteItem but before recording the versions: the next
    run finds the items, and records the version of those that hold the row's values."""
    Chef.objects.create(first_name="Same", last_name="Row", chef_id="Row#Same")
    Chef.objects.create(first_name="Other", last_name="Row", chef_id="Row#Other")
    client = dynamodb_client()
    for key, first in [("Row#Same", "Same"), ("Row#Other", "Changed")]:
        client.put_item(
            TableName="chef",
            Item={
                "ChefId": {"S": key},
                "firstName": {"S": first},
                "lastName": {"S": "Row"},
                "version": {"N": "3"},
            },
        )
    call_command("backfill", "--to", "dynamo", stdout=io.StringIO())
    versions = dict(KeyState.objects.values_list("key", "item_version"))
    assert versions.get("Row#Same") == 3
    assert versions.get("Row#Other") is None  # not ours: left for reconcile


def put_unversioned(key: str, first: str) -> None:
    dynamodb_client().put_item(
        TableName="chef",
        Item={"ChefId": {"S": key}, "firstName": {"S": first}, "lastName": {"S": "Plain"}},
    )


def test_to_mysql_writes_an_item_without_a_version_only_for_a_key_never_seen(db, aws):
    """Rule: an unversioned item cannot be ordered against MySQL, so it is written only for a
    key without a key state (a first load); a known key is left to the stream."""
    put_unversioned("Plain#A", "A")
    first = backfill_run(mapping=CHEF_MAPPING, direction="mysql")
    assert (first.written, first.current, first.kept) == (1, 0, 0)
    stamp = KeyState.objects.get(key="Plain#A").applied_at

    again = backfill_run(mapping=CHEF_MAPPING, direction="mysql", restart=True)
    assert (again.written, again.current, again.kept) == (0, 1, 0)  # not written again
    assert KeyState.objects.get(key="Plain#A").applied_at == stamp

    put_unversioned("Plain#A", "Changed")  # (no stream here) and a key never seen
    put_unversioned("Plain#B", "B")
    out = io.StringIO()
    call_command("backfill", "--to", "mysql", "--restart", stdout=out)  # exit 0: none failed
    assert dict(Chef.objects.values_list("chef_id", "first_name")) == {
        "Plain#A": "A",  # kept: never overwritten without a version
        "Plain#B": "B",
    }
    text = out.getvalue()
    assert "2 read, 1 written, 0 already current, 1 kept" in text
    assert "  kept: {'key': 'Plain#A'" in text and "reconcile --repair to-mysql" in text


def test_exit_status_1_only_when_items_failed_2_on_errors(db, aws):
    Chef.objects.create(chef_id="Flay#Bobby", first_name="Bobby", last_name="Flay")
    call_command("backfill", "--to", "dynamo", stdout=io.StringIO())  # returns: status 0
    Chef.objects.create(first_name=None, last_name="Nameless")  # the mapping cannot carry it
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("backfill", "--to", "dynamo", "--restart", stdout=out)
    assert exit_.value.code == 1
    text = out.getvalue()
    assert "1 already current" in text and "1 failed" in text
    assert "  failed: {'pk': " in text and "firstName: missing" in text
    with pytest.raises(CommandError) as err:
        call_command("backfill", "--to", "dynamo", stdout=io.StringIO())  # finished already
    assert err.value.returncode == 2
