"""manage.py reconcile: every kind of drift, counted and repaired in both directions."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.aws import dynamodb_client
from syncer.models import KeyState, ReconcileItem, ReconcileKey, ReconcileRun
from syncer.reconcile.report import ReconcileOptions
from syncer.reconcile.run import reconcile_run
from syncer.reconcile.scan import (
    bucket_range,
    dynamo_scan_pages,
    key_hash,
    segment_scan,
    spill_drop,
)
from tests.procs import ROOT


@pytest.fixture(autouse=True)
def _no_settle(settings):
    # Nothing is in flight in these tests: look again at once (the settle rules are tested
    # with their own times below).
    settings.RECONCILE_SETTLE_SECONDS = 0.0


def put_item(key: str, first: str, last: str, version: int = 1, **raw) -> None:
    item = {"ChefId": {"S": key}, "firstName": {"S": first}, "lastName": {"S": last}}
    item["version"] = {"N": str(version)}
    item.update(raw)
    dynamodb_client().put_item(TableName=CHEF_MAPPING.table_name, Item=item)


def item(key: str) -> dict | None:
    return (
        dynamodb_client()
        .get_item(
            TableName=CHEF_MAPPING.table_name, Key={"ChefId": {"S": key}}, ConsistentRead=True
        )
        .get("Item")
    )


def row(key: str, first: str, last: str, *, version: int | None = 1, deleted=False) -> Chef:
    chef = Chef.objects.create(chef_id=key, first_name=first, last_name=last)
    KeyState.objects.create(
        mapping="chef", key=key, sequence=1, deleted=deleted, item_version=version,
        applied_at=timezone.now(),
    )  # fmt: skip
    return chef


def both(key: str, first: str, last: str, **kw) -> None:
    put_item(key, first, last)
    row(key, first, last, **kw)


def seed_drift() -> None:
    for name in ("Brown#Alton", "Flay#Bobby", "Child#Julia", "Ducasse#Alain"):
        both(name, name.split("#")[1], name.split("#")[0])
    put_item("Batali#Mario", "Mario", "Batali")  # missing in MySQL
    put_item("Colicchio#Tom", "Tom", "Colicchio")  # missing in MySQL
    row("Ramsay#Gordon", "Gordon", "Ramsay", version=None)  # missing in DynamoDB
    put_item("Lagasse#Emeril", "Emeril", "Lagasse", version=3)  # different last name
    row("Lagasse#Emeril", "Emeril", "Lagassé", version=3)
    both("Smith#Art", "Art", "Smith", deleted=True)  # equal, but the key state says removed


def run(**kw):
    kw.setdefault("buckets", 3)
    kw.setdefault("segments", 2)
    return reconcile_run(mappings=[CHEF_MAPPING], options=ReconcileOptions(**kw))


def counts(report) -> dict[str, int]:
    return {k: v for k, v in report.mappings[0].counts.items() if v}


def test_every_kind_of_drift_is_counted_with_samples(db, aws):
    seed_drift()
    put_item("Bad#Type", "x", "y", firstName={"N": "5"})  # the mapping refuses it
    row("Bad#Type", "x", "y")
    put_item("Ghost#Key", "G", "K")  # in DynamoDB, absent in MySQL, tombstoned
    KeyState.objects.create(
        mapping="chef", key="Ghost#Key", sequence=9, deleted=True, applied_at=timezone.now()
    )
    Chef.objects.create(first_name="Legacy", last_name="Row")  # no key yet
    Chef.objects.create(first_name="Other", last_name="Row", chef_id="")

    report = run()

    assert counts(report) == {
        "equal": 4,
        "missing_in_mysql": 3,
        "missing_in_dynamo": 1,
        "different": 2,
        "tombstoned": 2,
        "unkeyed": 2,
    }
    m = report.mappings[0]
    assert report.drift == 10 and m.dynamo_items == 10 and m.mysql_rows == 10
    assert m.drifted == 9  # Ghost#Key is missing in MySQL and tombstoned: one key
    samples = m.samples
    assert [s["key"] for s in samples["missing_in_mysql"]] == [
        "Batali#Mario", "Colicchio#Tom", "Ghost#Key"
    ]  # fmt: skip
    assert samples["missing_in_dynamo"][0]["mysql"] == {
        "first_name": "Gordon", "last_name": "Ramsay"
    }  # fmt: skip
    different = {s["key"]: s for s in samples["different"]}
    assert different["Lagasse#Emeril"]["fields"] == ["last_name"]
    assert different["Lagasse#Emeril"]["version"] == 3
    assert "firstName: expected type S, got N" in different["Bad#Type"]["error"]
    assert {s["key"] for s in samples["tombstoned"]} == {"Smith#Art", "Ghost#Key"}
    assert [s["mysql"]["first_name"] for s in samples["unkeyed"]] == ["Legacy", "Other"]
    # The spilled copy of DynamoDB is dropped at the end of the run.
    assert not ReconcileItem.objects.exists()


def test_result_does_not_depend_on_buckets_or_segments(db, aws):
    seed_drift()
    reports = [run(buckets=b, segments=s).as_dict()["mappings"][0] for b, s in [(1, 1), (7, 3)]]
    for r in reports:
        r.pop("buckets"), r.pop("segments")
    assert reports[0] == reports[1]


def test_mysql_crc32_agrees_with_python_for_any_key(db, aws):
    keys = ["plain", "Müller#Jürgen", "日本#料理", "emoji#🍳", "a" * 255]
    for k in keys:
        row(k, "f", "l")
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, CRC32(chef_id) FROM cheftable")
        assert {k: key_hash(k) for k in keys} == dict(cur.fetchall())
    assert bucket_range(0, 3)[0] == 0 and bucket_range(2, 3)[1] == 2**32


def test_repair_command_exits_0_when_everything_found_was_repaired(db, aws):
    seed_drift()
    out = io.StringIO()
    call_command("reconcile", "--repair", "to-mysql", "--buckets", "2", "-v", "2", stdout=out)
    text = out.getvalue()
    assert "5 difference(s)" in text and "repair: repaired=5" in text
    assert "chef Batali#Mario: write DynamoDB's current item to MySQL" in text


def test_repair_to_mysql_then_in_sync(db, aws):
    seed_drift()
    report = run(repair="to-mysql")
    assert report.mappings[0].repairs["repaired"] == 5 and report.unrepaired == 0
    assert dict(Chef.objects.values_list("chef_id", "last_name")) == {
        "Brown#Alton": "Brown", "Flay#Bobby": "Flay", "Child#Julia": "Child",
        "Ducasse#Alain": "Ducasse", "Batali#Mario": "Batali", "Colicchio#Tom": "Colicchio",
        "Lagasse#Emeril": "Lagasse", "Smith#Art": "Smith",
    }  # fmt: skip
    assert KeyState.objects.get(key="Ramsay#Gordon").deleted
    assert not KeyState.objects.get(key="Smith#Art").deleted
    assert run().drift == 0
    call_command("reconcile", stdout=io.StringIO())  # exit 0: returns normally

    put_item("Ghost#Key", "G", "K")  # absent in MySQL and tombstoned: one key, one repair
    KeyState.objects.create(
        mapping="chef", key="Ghost#Key", sequence=9, deleted=True, applied_at=timezone.now()
    )
    KeyState.objects.filter(key="Batali#Mario").update(deleted=True)  # present, tombstoned
    again = run(repair="to-mysql")
    assert again.drift == 3 and again.mappings[0].repairs["repaired"] == 2
    assert again.unrepaired == 0


def test_repair_to_dynamo_then_in_sync(db, aws):
    seed_drift()
    report = run(repair="to-dynamo")
    assert report.mappings[0].repairs == {
        "repaired": 5, "would_repair": 0, "would_fail": 0, "skipped": 0, "failed": 0
    }  # fmt: skip
    assert item("Batali#Mario") is None and item("Colicchio#Tom") is None
    assert item("Ramsay#Gordon")["firstName"] == {"S": "Gordon"}
    lagasse = item("Lagasse#Emeril")
    assert lagasse["lastName"] == {"S": "Lagassé"} and lagasse["version"] == {"N": "4"}
    assert KeyState.objects.get(key="Lagasse#Emeril").item_version == 4
    assert Chef.objects.count() == 7  # MySQL untouched
    assert run().drift == 0


def test_dry_run_prints_and_changes_nothing(db, aws):
    seed_drift()
    before = (list(Chef.objects.values_list()), item("Lagasse#Emeril"))
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", "--repair", "to-dynamo", "--dry-run", stdout=out)
    assert exit_.value.code == 1
    text = out.getvalue()
    assert "chef Batali#Mario: would delete the DynamoDB item (if still at version 1)" in text
    assert "chef Lagasse#Emeril: would write the MySQL row's values to DynamoDB" in text
    assert "would_repair=5" in text
    assert (list(Chef.objects.values_list()), item("Lagasse#Emeril")) == before


def test_repair_never_overwrites_a_change_made_after_its_read(db, aws, monkeypatch):
    from syncer.reconcile import recheck

    both("Brown#Alton", "Alton", "Brown")
    Chef.objects.filter(chef_id="Brown#Alton").update(last_name="Legacy")  # drift
    put_item("Batali#Mario", "Mario", "Batali")  # missing in MySQL
    look = recheck.keys_look

    def look_then_change(mapping, keys):
        seen = look(mapping, keys)
        # After the recheck read them (the read the repairs are conditioned on), both
        # items change in DynamoDB (version 2).
        put_item("Brown#Alton", "Alton", "Newer", version=2)
        put_item("Batali#Mario", "Mario", "Newer", version=2)
        return seen

    monkeypatch.setattr(recheck, "keys_look", look_then_change)
    report = reconcile_run(
        mappings=[CHEF_MAPPING],
        options=ReconcileOptions(segments=1, buckets=1, repair="to-dynamo"),
    )
    assert report.mappings[0].repairs["skipped"] == 2
    assert report.mappings[0].repairs["repaired"] == 0
    assert item("Brown#Alton")["lastName"] == {"S": "Newer"}
    assert item("Batali#Mario")["lastName"] == {"S": "Newer"}


def test_json_format_and_exit_statuses(db, aws):
    both("Brown#Alton", "Alton", "Brown")
    out = io.StringIO()
    call_command("reconcile", "--format", "json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["in_sync"] is True and data["mappings"][0]["counts"]["equal"] == 1

    put_item("Batali#Mario", "Mario", "Batali")
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", "chef", "--format", "json", stdout=out)
    assert exit_.value.code == 1
    assert json.loads(out.getvalue())["mappings"][0]["counts"]["missing_in_mysql"] == 1

    with pytest.raises(CommandError) as err:
        call_command("reconcile", "nosuch")
    assert err.value.returncode == 2 and "no mapping named 'nosuch'" in str(err.value)
    with pytest.raises(CommandError) as err:
        call_command("reconcile", "--dry-run")
    assert err.value.returncode == 2


def test_process_exit_status_on_error_is_2():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    for argv in (["nosuch"], ["--segments", "x"]):
        result = subprocess.run(
            [sys.executable, "manage.py", "reconcile", *argv],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr


def test_generic_mapping_with_typed_fields(db, gadget_mapping, moto_server):
    from syncer.local.provision import aws_resources_ensure
    from tests.testapp.models import Gadget

    moto_server.reset()
    aws_resources_ensure()
    client = dynamodb_client()
    typed = {"name": {"S": "knob"}, "count": {"N": "3"}, "active": {"BOOL": True}}
    client.put_item(TableName="gadgets", Item={"Sku": {"S": "k1"}, **typed})
    client.put_item(TableName="gadgets", Item={"Sku": {"S": "k2"}, **typed})
    Gadget.objects.create(sku="k1", name="knob", count=3, active=True)
    Gadget.objects.create(sku="k2", name="knob", count=4, active=True)
    report = reconcile_run(mappings=[gadget_mapping], options=ReconcileOptions(buckets=2))
    assert counts(report) == {"equal": 1, "different": 1}
    assert report.mappings[0].samples["different"][0]["fields"] == ["count"]
    settings  # noqa: B018 - settings imported for fixtures' side effects


def test_scan_segments_partition_the_table(db, aws):
    from syncer.models import ReconcileRun
    from syncer.reconcile.scan import segment_scan

    seed_drift()
    run_ = ReconcileRun.objects.create()
    spilled = [
        segment_scan(run_id=run_.pk, mapping=CHEF_MAPPING, segment=s, total_segments=3,
                     consistent=True)
        for s in range(3)
    ]  # fmt: skip
    assert sum(spilled) == 8 and all(spilled)  # each item once, every segment used
    assert ReconcileItem.objects.values("key").distinct().count() == 8


def test_spill_quotes_any_key_and_value(db, aws):
    # The spill builds its INSERTs itself: quotes, backslashes, percent signs, newlines,
    # NUL and 4-byte characters must arrive as they are, in keys and in values.
    odd = ["O'Brien#Conan", 'back\\slash#"q"', "pct%s%%#x", "emoji#🍳", "nl\n#tab\t"]
    for n, key in enumerate(odd):
        both(key, f"{key} first\x00", f"{key} last {n}")
    put_item("Quote'd#Diff", "It's", "Dynamo's")
    row("Quote'd#Diff", "It's", "MySQL's")

    report = run(buckets=2)

    assert counts(report) == {"equal": 5, "different": 1}
    different = report.mappings[0].samples["different"][0]
    assert different["key"] == "Quote'd#Diff" and different["fields"] == ["last_name"]
    assert different["dynamo"]["last_name"] == "Dynamo's"


def test_compare_reads_the_mapped_table_once_then_by_primary_key(db, aws):
    # Work stays linear in the table: the key hashes of the MySQL side are taken in one
    # statement, and no bucket scans the whole mapped table (or the key states) again.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    seed_drift()
    with CaptureQueriesContext(connection) as captured:
        report = run(buckets=7)
    assert report.drift == 5
    hashed = [q["sql"] for q in captured.captured_queries if "CRC32(" in q["sql"]]
    assert len(hashed) == 2, hashed  # the snapshot: keyed rows, tombstones
    assert all(sql.startswith("INSERT INTO `syncer_reconcilekey`") for sql in hashed)
    selects = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    keyed = [q for q in selects if "FROM `cheftable`" in q and " IS NULL OR " not in q]
    # By primary key (the compare), or by the unique key (the recheck of what differs).
    by_index = ("`cheftable`.`id` IN (", "`cheftable`.`chef_id` IN (")
    assert keyed and all(any(i in q for i in by_index) for q in keyed)
    states = [q for q in selects if "FROM `syncer_keystate`" in q]
    assert states and all("`syncer_keystate`.`key` IN (" in q for q in states)


def test_spilled_pages_are_written_in_key_hash_order(db):
    run_ = ReconcileRun.objects.create()
    page = [
        {"ChefId": {"S": f"K{i}#F"}, "firstName": {"S": "F"}, "lastName": {"S": "L"}}
        for i in range(500)
    ]
    assert segment_scan(run_id=run_.pk, mapping=CHEF_MAPPING, segment=0, total_segments=1,
                        consistent=False, pages=[page[:250], page[250:]]) == 500  # fmt: skip
    hashes = list(ReconcileItem.objects.order_by("id").values_list("key_hash", flat=True))
    first, second = hashes[:250], hashes[250:]
    assert first == sorted(first) and second == sorted(second)  # each page, in hash order
    assert hashes != sorted(hashes)


def test_spill_drop_deletes_only_its_own_run(db):
    runs = [ReconcileRun.objects.create() for _ in range(2)]
    for n in range(30):  # interleaved ids, as with two runs at the same time
        for r in runs:
            ReconcileItem.objects.create(run_id=r.pk, mapping="chef", key_hash=n, key=f"k{n}")
            ReconcileKey.objects.create(
                run_id=r.pk, mapping="chef", source=ReconcileKey.Source.ROW, key_hash=n,
                object_pk=str(n),
            )  # fmt: skip
    assert spill_drop(runs[0].pk) == 60
    assert set(ReconcileItem.objects.values_list("run_id", flat=True)) == {runs[1].pk}
    assert set(ReconcileKey.objects.values_list("run_id", flat=True)) == {runs[1].pk}
    assert ReconcileItem.objects.count() == ReconcileKey.objects.count() == 30


def test_a_failing_segment_stops_the_run_and_drops_the_spill(db, aws):
    from syncer.aws import DynamoUnavailable

    seed_drift()

    def source(mapping, segment, total, consistent):
        yield from dynamo_scan_pages(mapping, segment, total, consistent)
        if segment == 1:
            raise DynamoUnavailable("DynamoDB is unavailable: read timeout")

    with pytest.raises(DynamoUnavailable):
        reconcile_run(
            mappings=[CHEF_MAPPING],
            options=ReconcileOptions(segments=3, buckets=2),
            page_source=source,
        )
    assert not ReconcileItem.objects.exists() and not ReconcileKey.objects.exists()
    assert ReconcileRun.objects.get().finished_at is not None


def test_scan_pages_have_their_own_read_timeout(settings):
    from syncer.aws import dynamodb_client, dynamodb_scan_client

    settings.DYNAMO_READ_TIMEOUT = 5.0
    settings.DYNAMO_SCAN_READ_TIMEOUT = 77.0
    assert dynamodb_scan_client().meta.config.read_timeout == 77.0
    assert dynamodb_client().meta.config.read_timeout == 5.0
    settings.DYNAMO_SCAN_READ_TIMEOUT = 1.0  # never shorter than a web request's
    assert dynamodb_scan_client().meta.config.read_timeout == 5.0
