"""The relay (local event source mapping) against DynamoDB Streams and SQS on moto."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from datetime import datetime

import pytest
from botocore.exceptions import ClientError
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from syncer.aws import dynamodb_client, sqs_client
from syncer.local.provision import table_ensure
from syncer.local.records import lambda_record, order_parents_first
from syncer.local.relay import StreamRelay, default_handler
from syncer.models import FailedChange, ShardCheckpoint
from syncer.registry import registry
from tests.conftest import database_url
from tests.procs import ManagedProcess, wait_until
from tests.syncer.conftest import GADGET_MAPPING
from tests.syncer.events import all_changes, drain_queue

TABLE = "relay-gadgets"
RELAY_MAPPING = dataclasses.replace(GADGET_MAPPING, name="relay-gadget", table=TABLE)


@pytest.fixture
def stream_table(aws):
    """A mapped table with a NEW_AND_OLD_IMAGES stream on a freshly reset moto."""
    registry.register(RELAY_MAPPING)
    table_ensure(table_name=TABLE, key_attribute="Sku")
    yield TABLE
    registry.unregister(RELAY_MAPPING.name)


def put(sku: str, name: str = "g") -> None:
    dynamodb_client().put_item(
        TableName=TABLE,
        Item={"Sku": {"S": sku}, "name": {"S": name}, "active": {"BOOL": True}},
    )


def delete(sku: str) -> None:
    dynamodb_client().delete_item(TableName=TABLE, Key={"Sku": {"S": sku}})


def sent_changes() -> list[dict]:
    return all_changes(drain_queue(sqs_client(), settings.SYNC_QUEUE_URL))


class Spy:
    """Wraps a handler and keeps every event it was given."""

    def __init__(self, inner=None):
        self.inner = inner or default_handler()
        self.events: list[dict] = []

    def __call__(self, event, context):
        self.events.append(event)
        return self.inner(event, context)

    @property
    def records(self) -> list[dict]:
        return [r for e in self.events for r in e["Records"]]


def relay(**kwargs) -> StreamRelay:
    kwargs.setdefault("tables", [TABLE])
    kwargs.setdefault("retry_backoff", 0.01)
    kwargs.setdefault("poll_interval", 0.05)
    return StreamRelay(**kwargs)


def checkpoint() -> ShardCheckpoint:
    return ShardCheckpoint.objects.get(stream_arn__contains=f"table/{TABLE}/")


# --- pure parts ------------------------------------------------------------------------
def test_shards_are_ordered_parents_first():
    shards = [
        {"ShardId": "c", "ParentShardId": "b"},
        {"ShardId": "b", "ParentShardId": "a"},
        {"ShardId": "x", "ParentShardId": "gone"},  # parent trimmed away
        {"ShardId": "a"},
    ]
    assert [s["ShardId"] for s in order_parents_first(shards)] == ["a", "b", "c", "x"]


def test_lambda_record_from_get_records_output():
    raw = {
        "eventID": "e1",
        "eventName": "MODIFY",
        "eventVersion": "1.0",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime.fromisoformat("2026-01-02T03:04:05.678+00:00"),
            "Keys": {"Sku": {"S": "a"}},
            "NewImage": {"Sku": {"S": "a"}},
            "SequenceNumber": "100",
            "SizeBytes": 10,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
    record = lambda_record(raw, stream_arn="arn:aws:dynamodb:r:1:table/t/stream/s", region="r")
    assert record["eventSourceARN"] == "arn:aws:dynamodb:r:1:table/t/stream/s"
    assert record["eventVersion"] == "1.1"
    assert record["dynamodb"]["ApproximateCreationDateTime"] == pytest.approx(1767323045.678)
    assert raw["dynamodb"]["ApproximateCreationDateTime"].year == 2026  # input untouched


def test_unknown_table_is_a_command_error(db, stream_table):
    with pytest.raises(CommandError, match="no registered mapping"):
        call_command("relay_stream", "--once", "--table", "nope")


# --- against moto ----------------------------------------------------------------------
def test_once_relays_puts_updates_and_deletes(db, stream_table):
    put("a", "first")
    put("b")
    put("a", "second")
    delete("b")
    spy = Spy()

    stats = relay(handler=spy).run(once=True)

    assert stats.records == 4 and stats.failed == 0
    record = spy.records[0]
    assert record["eventSourceARN"].startswith(
        f"arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/"
    )
    assert record["eventSource"] == "aws:dynamodb" and record["eventVersion"] == "1.1"
    assert isinstance(record["dynamodb"]["ApproximateCreationDateTime"], float)
    changes = sent_changes()
    by_key = {}
    for c in sorted(changes, key=lambda c: int(c["seq"])):
        by_key.setdefault(c["keys"]["Sku"]["S"], []).append(c)
    assert [c["event"] for c in by_key["a"]] == ["INSERT", "MODIFY"]
    assert by_key["a"][1]["image"]["name"] == {"S": "second"}
    assert [c["event"] for c in by_key["b"]] == ["INSERT", "REMOVE"]
    assert by_key["b"][1]["image"] is None
    assert {c["table"] for c in changes} == {TABLE}
    cp = checkpoint()
    assert cp.sequence_number == max((c["seq"] for c in changes), key=int)
    assert cp.records_total == 4 and cp.last_batch_at is not None


def test_batch_size_is_honoured(db, stream_table):
    for i in range(7):
        put(f"k{i}")
    spy = Spy()
    relay(handler=spy, batch_size=3).run(once=True)
    assert [len(e["Records"]) for e in spy.events] == [3, 3, 1]
    assert len(sent_changes()) == 7


def test_restart_resumes_from_the_checkpoint(db, stream_table):
    for sku in ("a", "b", "c"):
        put(sku)
    relay().run(once=True)
    assert len(sent_changes()) == 3

    spy = Spy()
    relay(handler=spy).run(once=True)  # a restart with nothing new
    assert spy.records == []
    assert sent_changes() == []

    put("d")
    delete("a")
    spy = Spy()
    relay(handler=spy).run(once=True)
    assert sorted((c["keys"]["Sku"]["S"], c["event"]) for c in sent_changes()) == [
        ("a", "REMOVE"),
        ("d", "INSERT"),
    ]
    assert len(spy.records) == 2
    assert checkpoint().records_total == 5


def test_starting_position_latest_skips_older_records(db, stream_table):
    from syncer.pipeline.apply import changes_apply
    from tests.testapp.models import Gadget

    put("old")
    spy = Spy()
    latest = relay(handler=spy, starting_position="LATEST")
    latest.run(once=True)
    assert spy.records == []
    # The records written after the start are relayed, and they apply.
    put("new", "one")
    put("newer", "two")
    latest.run(once=True)
    assert [r["dynamodb"]["Keys"]["Sku"]["S"] for r in spy.records] == ["new", "newer"]
    result = changes_apply(changes=sent_changes())
    assert (result.applied, result.failed) == (2, 0)
    assert sorted(Gadget.objects.values_list("sku", "name")) == [("new", "one"), ("newer", "two")]


def test_poison_record_is_retried_then_kept_and_the_shard_moves_on(db, stream_table):
    for sku in ("a", "poison", "b", "c"):
        put(sku)
    real = default_handler()
    calls: list[list[str]] = []
    last_seq: list[str] = []

    def handler(event, context):
        # Fails the poison record, hands the others to the real handler.
        calls.append([r["dynamodb"]["Keys"]["Sku"]["S"] for r in event["Records"]])
        last_seq.append(event["Records"][-1]["dynamodb"]["SequenceNumber"])
        good = [r for r in event["Records"] if r["dynamodb"]["Keys"]["Sku"]["S"] != "poison"]
        bad = [r for r in event["Records"] if r not in good]
        response = real({"Records": good}, context)
        failures = response["batchItemFailures"] + [
            {"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in bad
        ]
        return {"batchItemFailures": failures}

    stats = relay(handler=handler, max_retries=2).run(once=True)

    # First call with everything, then retries from the poison record on, 2 of them.
    assert calls == [["a", "poison", "b", "c"], ["poison", "b", "c"], ["poison", "b", "c"]]
    failed = FailedChange.objects.get()
    assert failed.source == FailedChange.Source.STREAM
    assert failed.mapping == "relay-gadget" and failed.key == "poison"
    assert failed.attempts == 3 and failed.event_name == "INSERT"
    assert failed.payload["dynamodb"]["Keys"] == {"Sku": {"S": "poison"}}
    assert str(failed.sequence) == failed.payload["dynamodb"]["SequenceNumber"]
    assert failed.event_id == failed.payload["eventID"]
    assert "batchItemFailures" in failed.error
    assert stats.failed == 1 and stats.retries == 2
    assert {c["keys"]["Sku"]["S"] for c in sent_changes()} == {"a", "b", "c"}
    # The shard moved past it: the next run reads nothing and keeps nothing again.
    assert checkpoint().sequence_number == last_seq[0]
    put("d")
    calls.clear()
    relay(handler=handler).run(once=True)
    assert calls == [["d"]]
    assert FailedChange.objects.get().attempts == 3


def test_a_raising_handler_fails_the_whole_batch_and_is_retried(db, stream_table):
    put("a")
    put("b")
    real = default_handler()
    raised = []

    def flaky(event, context):
        if len(raised) < 2:
            raised.append(len(event["Records"]))
            raise ConnectionError("SQS is down")
        return real(event, context)

    stats = relay(handler=flaky).run(once=True)
    assert raised == [2, 2]
    assert stats.retries == 2 and stats.failed == 0
    assert sorted(c["keys"]["Sku"]["S"] for c in sent_changes()) == ["a", "b"]
    assert not FailedChange.objects.exists()


def test_a_handler_that_always_raises_keeps_the_batch_as_failed(db, stream_table):
    put("a")
    put("b")

    def broken(event, context):
        raise RuntimeError("bug")

    stats = relay(handler=broken, max_retries=1).run(once=True)
    assert stats.failed == 2
    assert sorted(FailedChange.objects.values_list("key", flat=True)) == ["a", "b"]
    assert all("RuntimeError: bug" in f.error for f in FailedChange.objects.all())
    assert checkpoint().records_total == 2


class ExpiringStreams:
    """moto's iterators never expire (AWS: after 15 minutes): this one's first does."""

    def __init__(self, inner):
        self.inner = inner
        self.expired = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_records(self, **kwargs):
        if not self.expired:
            self.expired += 1
            raise ClientError(
                {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}},
                "GetRecords",
            )
        return self.inner.get_records(**kwargs)


def test_expired_iterator_is_renewed_from_the_checkpoint(db, stream_table):
    from syncer.aws import streams_client

    put("a")
    relay().run(once=True)
    put("b")
    streams = ExpiringStreams(streams_client())
    spy = Spy()
    relay(handler=spy, streams=streams).run(once=True)
    assert streams.expired == 1
    assert [r["dynamodb"]["Keys"]["Sku"]["S"] for r in spy.records] == ["b"]


def test_command_once(db, stream_table, capsys):
    put("a")
    call_command("relay_stream", "--once", "--table", TABLE)
    out = capsys.readouterr().out
    assert "1 record(s)" in out
    assert [c["keys"]["Sku"]["S"] for c in sent_changes()] == ["a"]


def test_sigterm_stops_a_running_relay_cleanly(transactional_db, aws, tmp_path):
    table = settings.DYNAMO_CHEF_TABLE  # registered by the chefs app in the subprocess too
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url(db),
        "PYTHONUNBUFFERED": "1",
    }
    proc = ManagedProcess(
        "relay",
        [sys.executable, "manage.py", "relay_stream", "--table", table, "--poll-interval", "0.2"],
        env=env,
        log_dir=tmp_path,
    ).start()
    try:
        dynamodb_client().put_item(
            TableName=table,
            Item={
                "ChefId": {"S": "Brown#Alton"},
                "firstName": {"S": "Alton"},
                "lastName": {"S": "Brown"},
            },
        )
        # Running and relaying: its checkpoint shows the record.
        wait_until(
            lambda: ShardCheckpoint.objects.filter(
                stream_arn__contains=f"table/{table}/", records_total=1
            ).exists(),
            timeout=60,
            what="the relay subprocess to relay one record",
        )
        proc.signal_group(signal.SIGTERM)
        assert proc.proc.wait(timeout=15) == 0, proc.log_tail()
        assert "SIGTERM received" in proc.log_path.read_text()
    finally:
        proc.stop()
    changes = sent_changes()
    assert [c["keys"] for c in changes] == [{"ChefId": {"S": "Brown#Alton"}}]


def test_relayed_changes_apply_to_the_mapped_model(db, stream_table):
    """What the relay and handler send is what the apply service takes."""
    from syncer.pipeline.apply import changes_apply
    from tests.testapp.models import Gadget

    put("a", "one")
    put("b", "two")
    put("a", "uno")
    delete("b")
    relay().run(once=True)

    result = changes_apply(changes=sent_changes())

    assert result.failed == 0
    assert list(Gadget.objects.values_list("sku", "name")) == [("a", "uno")]


def test_a_running_relay_follows_new_records_and_stops_when_asked(transactional_db, stream_table):
    import threading

    spy = Spy()
    running = relay(handler=spy, batching_window=0.2)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        put("a")
        wait_until(lambda: len(spy.records) == 1, timeout=30, what="the first record")
        put("b")
        put("c")
        wait_until(lambda: len(spy.records) == 3, timeout=30, what="two more records")
    finally:
        running.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert [r["dynamodb"]["Keys"]["Sku"]["S"] for r in spy.records] == ["a", "b", "c"]
    assert checkpoint().records_total == 3


class SplitStreams:
    """A stream whose shard split (moto's single shard never closes): a closed parent
    with two records and an open child with one, listed child first over two pages."""

    def __init__(self):
        def rec(seq: int, sku: str) -> dict:
            return {
                "eventID": f"ev{seq}",
                "eventName": "INSERT",
                "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": datetime.fromisoformat(
                        "2026-01-01T00:00:00+00:00"
                    ),
                    "Keys": {"Sku": {"S": sku}},
                    "NewImage": {"Sku": {"S": sku}},
                    "SequenceNumber": str(seq),
                    "SizeBytes": 1,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }

        self.records = {"parent": [rec(1, "p1"), rec(2, "p2")], "child": [rec(3, "c1")]}
        self.closed = {"parent"}

    def describe_stream(self, StreamArn, ExclusiveStartShardId=None):  # noqa: N803
        pages = {
            None: ([{"ShardId": "child", "ParentShardId": "parent"}], "child"),
            "child": ([{"ShardId": "parent"}], None),
        }
        shards, last = pages[ExclusiveStartShardId]
        for s in shards:
            ending = {"EndingSequenceNumber": "2"} if s["ShardId"] in self.closed else {}
            s["SequenceNumberRange"] = {"StartingSequenceNumber": "1", **ending}
        desc = {"Shards": shards}
        if last:
            desc["LastEvaluatedShardId"] = last
        return {"StreamDescription": desc}

    def get_shard_iterator(self, StreamArn, ShardId, ShardIteratorType, SequenceNumber=None):  # noqa: N803
        start = 0
        if ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            seqs = [r["dynamodb"]["SequenceNumber"] for r in self.records[ShardId]]
            start = seqs.index(SequenceNumber) + 1
        return {"ShardIterator": f"{ShardId}:{start}"}

    def get_records(self, ShardIterator, Limit):  # noqa: N803
        shard, start = ShardIterator.split(":")
        records = self.records[shard][int(start) : int(start) + Limit]
        end = int(start) + len(records)
        resp = {"Records": records}
        if shard not in self.closed or end < len(self.records[shard]):
            resp["NextShardIterator"] = f"{shard}:{end}"
        return resp


def test_parent_shard_is_read_to_its_end_before_its_child(db, stream_table):
    spy = Spy(inner=lambda event, context: {"batchItemFailures": []})
    relay(handler=spy, streams=SplitStreams()).run(once=True)

    assert [r["dynamodb"]["Keys"]["Sku"]["S"] for r in spy.records] == ["p1", "p2", "c1"]
    parent = ShardCheckpoint.objects.get(shard_id="parent")
    child = ShardCheckpoint.objects.get(shard_id="child")
    assert parent.finished and parent.sequence_number == "2"
    assert not child.finished and child.sequence_number == "3"
    assert child.parent_shard_id == "parent"

    spy.events.clear()
    relay(handler=spy, streams=SplitStreams()).run(once=True)
    assert spy.records == []  # finished parent skipped, child resumed after its checkpoint
