"""reconcile under traffic: each recheck rule of syncer/reconcile/run.py's docstring.

reconcile's waits go through `syncer.reconcile.recheck._sleep`; these tests replace it with a
function that plays what the pipeline (or a writer) does while reconcile waits, so every
case is exact and no test sleeps.
"""

from __future__ import annotations

import io
import json
import threading
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.models import KeyState
from syncer.reconcile import recheck
from syncer.reconcile.recheck import settle_default
from syncer.reconcile.report import ReconcileOptions
from syncer.reconcile.run import reconcile_run
from tests.syncer.reconcile.test_run import put_item, row

SETTLE = 5.0


@pytest.fixture
def waits(monkeypatch):
    """reconcile's waits: `asked` records each, `then` holds what happens during each."""
    state = SimpleNamespace(asked=[], then=[])

    def sleep(seconds: float) -> None:
        state.asked.append(seconds)
        if state.then:
            state.then.pop(0)()

    monkeypatch.setattr(recheck, "_sleep", sleep)
    return state


def applied(key: str, first: str, version: int | None) -> None:
    """What the worker does when it applies a change: the row and the key state."""
    Chef.objects.filter(chef_id=key).update(first_name=first)
    KeyState.objects.filter(mapping="chef", key=key).update(
        item_version=version, source_time=timezone.now(), applied_at=timezone.now()
    )


def run(**kw):
    kw.setdefault("settle", SETTLE)
    report = reconcile_run(mappings=[CHEF_MAPPING], options=ReconcileOptions(segments=1, **kw))
    return report, report.mappings[0]


def test_rule1_a_change_applied_while_reconcile_waits_is_settled(db, aws, waits):
    row("In#Flight", "Old", "In", version=1)
    put_item("In#Flight", "New", "In", version=2)  # the stream has not delivered it yet
    waits.then.append(lambda: applied("In#Flight", "New", 2))

    report, m = run()

    assert m.counts["settled"] == 1 and report.drift == 0 and report.unrepaired == 0
    assert len(waits.asked) == 1 and waits.asked[0] == pytest.approx(SETTLE, abs=1)


def test_rule1_settled_keys_exit_0_and_are_shown(db, aws, waits):
    row("In#Flight", "Old", "In", version=1)
    put_item("In#Flight", "New", "In", version=2)
    waits.then.append(lambda: applied("In#Flight", "New", 2))
    out = io.StringIO()
    call_command("reconcile", "--settle", "5", stdout=out)  # returns: exit status 0
    text = out.getvalue()
    assert "in flight (settled)          1" in text and "in sync" in text
    assert "1 key(s) in flight were looked at again after 5.0s" in text

    row("Other#Key", "Old", "Other", version=1)
    put_item("Other#Key", "New", "Other", version=2)
    waits.then.append(lambda: applied("Other#Key", "New", 2))
    out = io.StringIO()
    call_command("reconcile", "--settle", "5", "--format", "json", stdout=out)
    counts = json.loads(out.getvalue())["mappings"][0]["counts"]
    assert counts["settled"] == 1 and counts["different"] == 0


def test_rule2_a_stale_scan_is_not_reported(db, aws, waits):
    # The scan's copy is version 1; MySQL has applied version 3 since, and DynamoDB is at
    # version 4, whose change the pipeline applies while reconcile waits again.
    row("Stale#Scan", "V3", "Stale", version=3)
    put_item("Stale#Scan", "V4", "Stale", version=4)
    old = {"ChefId": {"S": "Stale#Scan"}, "firstName": {"S": "V1"},
           "lastName": {"S": "Stale"}, "version": {"N": "1"}}  # fmt: skip

    def source(mapping, segment, total, consistent):
        yield [old]

    waits.then += [lambda: None, lambda: applied("Stale#Scan", "V4", 4)]
    report = reconcile_run(
        mappings=[CHEF_MAPPING],
        options=ReconcileOptions(segments=1, settle=SETTLE),
        page_source=source,
    )
    m = report.mappings[0]
    assert report.drift == 0 and m.counts["settled"] == 1
    assert len(waits.asked) == 2  # the first look found it moving: looked at once more


def test_rule3_an_edit_behind_the_syncs_back_is_drift_after_the_wait(db, aws, waits):
    put_item("Quiet#Key", "Same", "Quiet", version=1)
    row("Quiet#Key", "Tampered", "Quiet", version=1)  # same version, other values
    waits.then.append(lambda: None)

    report, m = run()

    assert m.counts["different"] == 1 and m.counts["settled"] == 0 and report.unrepaired == 1
    assert m.samples["different"][0]["mysql"]["first_name"] == "Tampered"
    assert len(waits.asked) == 1  # waited once, then reported: DynamoDB had not moved


def test_rule3_the_sync_applied_this_version_yet_mysql_differs(db, aws, waits):
    put_item("Odd#Key", "A", "Odd", version=1)
    row("Odd#Key", "B", "Odd", version=1)

    def writer_and_tamper():
        put_item("Odd#Key", "C", "Odd", version=2)
        applied("Odd#Key", "Tampered", 2)  # version 2 applied, values not DynamoDB's

    waits.then.append(writer_and_tamper)
    report, m = run()
    assert m.counts["different"] == 1 and report.unrepaired == 1
    assert m.samples["different"][0]["version"] == 2  # what the recheck read
    assert len(waits.asked) == 1  # reported at the first look, not looked at again


def put_unversioned(key: str, first: str) -> None:
    from syncer.aws import dynamodb_client

    last = key.split("#")[1]
    dynamodb_client().put_item(
        TableName="chef",
        Item={"ChefId": {"S": key}, "firstName": {"S": first}, "lastName": {"S": last}},
    )


def test_rule3_without_versions_an_edit_after_the_apply_is_drift(db, aws, waits):
    row("Plain#Quiet", "Old", "Quiet", version=None)
    put_unversioned("Plain#Quiet", "A")  # in flight when the scan reads it

    def applied_then_tampered():
        applied("Plain#Quiet", "A", None)  # a change applied after the scan...
        Chef.objects.filter(chef_id="Plain#Quiet").update(first_name="Tampered")  # ...then SQL

    waits.then.append(applied_then_tampered)
    report, m = run()
    assert m.counts["different"] == 1 and m.counts["in_flight"] == 0
    assert len(waits.asked) == 1


def test_rule3_a_row_under_a_tombstone_is_drift(db, aws, waits):
    # Both stores agree, but the key state says the item was removed.
    put_item("Ghost#Row", "A", "Ghost", version=1)
    row("Ghost#Row", "A", "Ghost", version=None, deleted=True)
    waits.then.append(lambda: None)
    report, m = run()
    assert m.counts["tombstoned"] == 1 and m.drifted == 1 and m.counts["settled"] == 0

    # No versions, DynamoDB moves and the tombstone is recent: still drift, at once.
    from syncer.aws import dynamodb_client

    dynamodb_client().delete_item(TableName="chef", Key={"ChefId": {"S": "Ghost#Row"}})
    Chef.objects.all().delete()
    KeyState.objects.all().delete()
    row("Plain#Ghost", "A", "Ghost", version=None, deleted=True)
    put_unversioned("Plain#Ghost", "A")

    def moves():
        KeyState.objects.filter(key="Plain#Ghost").update(source_time=timezone.now())
        put_unversioned("Plain#Ghost", "B")

    waits.asked.clear()
    waits.then.append(moves)
    report, m = run()
    assert m.counts["different"] == 1 and m.counts["tombstoned"] == 1 and m.drifted == 1
    assert len(waits.asked) == 1


def test_rule4_a_change_not_applied_within_settle_is_drift(db, aws, waits):
    row("Stuck#Key", "V1", "Stuck", version=1)
    put_item("Stuck#Key", "V2", "Stuck", version=2)
    version = [2]

    def writer_only():  # DynamoDB keeps moving, the pipeline applies nothing
        version[0] += 1
        put_item("Stuck#Key", f"V{version[0]}", "Stuck", version=version[0])

    waits.then += [writer_only, writer_only, writer_only]
    report, m = run()
    assert m.counts["different"] == 1 and m.counts["in_flight"] == 0
    assert m.samples["different"][0]["version"] == 3 and report.unrepaired == 1


def test_rule5_a_key_that_keeps_moving_while_applied_is_in_flight(db, aws, waits):
    row("Busy#Key", "V1", "Busy", version=1)
    put_item("Busy#Key", "V2", "Busy", version=2)

    def pipeline_then_writer(applied_version: int):
        def step():
            applied("Busy#Key", f"V{applied_version}", applied_version)
            put_item("Busy#Key", f"V{applied_version + 1}", "Busy", version=applied_version + 1)

        return step

    waits.then += [pipeline_then_writer(2), pipeline_then_writer(3)]
    report, m = run(repair="to-dynamo")
    assert m.counts["in_flight"] == 1 and report.drift == 0 and report.unrepaired == 0
    assert m.repairs["repaired"] == 0  # never repaired
    assert m.samples["in_flight"][0]["key"] == "Busy#Key"
    assert len(waits.asked) == 2


def test_rule5_without_versions_uses_the_stream_time_of_the_applied_change(db, aws, waits):
    from syncer.aws import dynamodb_client

    def put_unversioned(first: str) -> None:
        dynamodb_client().put_item(
            TableName="chef",
            Item={"ChefId": {"S": "Plain#Key"}, "firstName": {"S": first},
                  "lastName": {"S": "Plain"}},
        )  # fmt: skip

    row("Plain#Key", "A", "Plain", version=None)
    put_unversioned("B")

    def pipeline_then_writer(now: str, then: str):
        def step():
            applied("Plain#Key", now, None)
            put_unversioned(then)

        return step

    waits.then += [pipeline_then_writer("B", "C"), pipeline_then_writer("C", "D")]
    report, m = run()
    assert m.counts["in_flight"] == 1 and report.drift == 0

    # The same moves without the pipeline applying anything: drift (rule 4).
    waits.then += [lambda: put_unversioned("E"), lambda: put_unversioned("F")]
    report, m = run()
    assert m.counts["different"] == 1


def test_settle_default_follows_the_measured_lag(db, settings):

    from syncer.models import AppliedBatch
    from tests.factories import AppliedBatchFactory

    settings.RECONCILE_SETTLE_SECONDS = None
    assert settle_default() == recheck.SETTLE_UNMEASURED
    now = timezone.now()
    AppliedBatchFactory(applied_at=now, seconds=[0.1, 0.2, 1.5])
    assert settle_default() == pytest.approx(4 * 1.5)  # 4 x p99
    AppliedBatch.objects.all().delete()
    AppliedBatchFactory(applied_at=now, seconds=[100.0])
    assert settle_default() == recheck.SETTLE_MAX
    settings.RECONCILE_SETTLE_SECONDS = 1.25
    assert settle_default() == 1.25


def test_dry_run_to_mysql_maps_what_it_would_write(db, aws, waits):
    put_item("Bad#Type", "x", "y", firstName={"N": "5"})  # the mapping refuses it
    row("Bad#Type", "x", "old")
    put_item("Good#Key", "Good", "New")
    row("Good#Key", "Good", "Old")
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("reconcile", "--repair", "to-mysql", "--dry-run", "--settle", "0", stdout=out)
    assert exit_.value.code == 1
    text = out.getvalue()
    assert "chef Bad#Type: would fail: firstName: expected type S, got N" in text
    assert "chef Good#Key: would write DynamoDB's current item to MySQL" in text
    assert "would_repair=1, would_fail=1" in text
    # The real run fails where the dry run said it would.
    with pytest.raises(SystemExit):
        call_command("reconcile", "--repair", "to-mysql", "--settle", "0", stdout=io.StringIO())
    assert Chef.objects.get(chef_id="Bad#Type").last_name == "old"
    assert Chef.objects.get(chef_id="Good#Key").last_name == "New"


def test_no_wait_when_nothing_differs(db, aws, waits):
    put_item("Any#Key", "A", "B")
    row("Any#Key", "A", "B")
    report, m = run()
    assert m.counts["equal"] == 1 and not waits.asked


def test_an_item_whose_key_is_refused_stays_drift(db, aws, waits):
    put_item("K" * 300, "A", "B")  # DynamoDB takes it; the key column holds 255
    report, m = run()
    assert m.counts["missing_in_mysql"] == 1 and m.counts["settled"] == 0
    assert report.unrepaired == 1 and not waits.asked


@pytest.mark.django_db(transaction=True)
def test_a_look_reads_a_row_and_its_key_state_in_one_snapshot(aws):
    # The worker commits an apply (row and key state together) between the look's read of
    # the row and its read of the key state. Read apart, the old row would pair with the new
    # state's version: rule 3 ("applied this very version, MySQL differs") would call a
    # change in flight drift.
    row("Race#Key", "Old", "Race", version=1)
    put_item("Race#Key", "New", "Race", version=2)

    def apply_elsewhere() -> None:
        def work() -> None:
            try:
                with transaction.atomic():
                    applied("Race#Key", "New", 2)
            finally:
                connection.close()

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()

    row_reads: list[str] = []

    def after_the_row_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "`cheftable`" in sql and not row_reads:
            row_reads.append(sql)
            apply_elsewhere()
        return result

    with connection.execute_wrapper(after_the_row_read):
        look = recheck.keys_look(CHEF_MAPPING, ["Race#Key"])["Race#Key"]

    assert row_reads, "the look read no row"
    assert Chef.objects.get(chef_id="Race#Key").first_name == "New"  # the apply committed
    assert KeyState.objects.get(key="Race#Key").item_version == 2
    # The look saw the state before it, row and key state alike.
    assert (look.mysql["first_name"], look.applied_version) == ("Old", 1)
