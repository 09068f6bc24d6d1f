"""The stream handler on AWS-shaped events, sending to a FIFO queue on the moto server."""

from __future__ import annotations

import uuid
from collections import defaultdict

import boto3
import pytest

from syncer.pipeline.stream import handler as stream_handler
from syncer.pipeline.stream.contract import APPLY_TASK_NAME
from syncer.pipeline.stream.handler import CelerySender, HandlerConfig, process_event
from tests.syncer import events as ev
from tests.syncer.events import all_changes, drain_queue, stream_event


@pytest.fixture
def sqs(moto_server):
    return boto3.client("sqs", endpoint_url=moto_server.url, region_name=ev.REGION)


@pytest.fixture
def queue_url(sqs):
    # A queue per test keeps queues shallow (moto slows with depth) and dedup ids apart.
    name = f"h-{uuid.uuid4().hex[:12]}.fifo"
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    yield url
    sqs.delete_queue(QueueUrl=url)


def make_config(moto_server, queue_url: str, **overrides) -> HandlerConfig:
    env = {
        "SYNC_QUEUE_URL": queue_url,
        "AWS_REGION": ev.REGION,
        "AWS_ENDPOINT_URL": moto_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **{k: str(v) for k, v in overrides.items()},
    }
    return HandlerConfig.from_env(env)


@pytest.fixture
def sender(moto_server, queue_url) -> CelerySender:
    return CelerySender(make_config(moto_server, queue_url))


def test_config_from_env_defaults():
    config = HandlerConfig.from_env(
        {"SYNC_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/backsync-changes.fifo"}
    )
    assert config.queue_name == "backsync-changes.fifo"
    assert config.message_groups == 4
    assert config.endpoint_url is None
    assert stream_handler._broker_url(config) == "sqs://"
    with pytest.raises(ValueError):
        HandlerConfig.from_env({"SYNC_MESSAGE_GROUPS": "0"})


def test_each_event_name_becomes_its_change(sqs, queue_url, sender):
    ins = ev.insert("Brown#Alton", ts=1_700_000_000.123)
    mod = ev.modify("Brown#Alton", first="Alton J.")
    rem = ev.remove("Brown#Alton")

    response = process_event(stream_event(ins, mod, rem), sender=sender)

    assert response == {"batchItemFailures": []}
    messages = drain_queue(sqs, queue_url)
    assert [m.task for m in messages] == [APPLY_TASK_NAME]  # one key, one message
    changes = all_changes(messages)
    assert [c["event"] for c in changes] == ["INSERT", "MODIFY", "REMOVE"]
    for change, record in zip(changes, (ins, mod, rem), strict=True):
        assert change["id"] == record["eventID"]
        assert change["table"] == "chef"
        assert change["seq"] == record["dynamodb"]["SequenceNumber"]
        assert change["keys"] == {"ChefId": {"S": "Brown#Alton"}}
        assert "fetch" not in change
    assert changes[0]["image"] == ins["dynamodb"]["NewImage"]
    assert changes[0]["ts"] == pytest.approx(1_700_000_000.123)
    assert changes[1]["image"]["firstName"] == {"S": "Alton J."}
    assert changes[2]["image"] is None


def test_malformed_records_are_reported_and_the_others_sent(sqs, queue_url, sender):
    good1 = ev.insert("a")
    unknown_event = ev.insert("b")
    unknown_event["eventName"] = "UPSERT"
    no_keys = ev.insert("c")
    del no_keys["dynamodb"]["Keys"]
    no_arn = ev.insert("d")
    del no_arn["eventSourceARN"]
    bad_arn = ev.insert("e")
    bad_arn["eventSourceARN"] = "arn:aws:sqs:us-east-1:1:queue"
    good2 = ev.remove("f")
    no_seq = ev.insert("g")
    del no_seq["dynamodb"]["SequenceNumber"]

    records = [good1, unknown_event, no_keys, no_arn, bad_arn, good2, no_seq]
    response = process_event(stream_event(*records), sender=sender)

    failed = [f["itemIdentifier"] for f in response["batchItemFailures"]]
    expected = [r["dynamodb"].get("SequenceNumber") for r in records[1:5]] + [None]
    assert failed == expected
    sent_ids = {c["id"] for c in all_changes(drain_queue(sqs, queue_url))}
    assert sent_ids == {good1["eventID"], good2["eventID"]}


def test_record_without_new_image_asks_the_worker_to_fetch(sqs, queue_url, sender):
    keys_only = ev.stream_record("MODIFY", ev.chef_keys("k"), view_type="KEYS_ONLY")
    assert process_event(stream_event(keys_only), sender=sender) == {"batchItemFailures": []}
    (change,) = all_changes(drain_queue(sqs, queue_url))
    assert change["fetch"] is True and change["image"] is None


def test_large_batch_is_split_under_the_limit_keeping_group_order(moto_server, sqs, queue_url):
    max_bytes = 5_000
    sender = CelerySender(make_config(moto_server, queue_url, SYNC_MAX_MESSAGE_BYTES=max_bytes))
    records = []
    for i in range(120):
        key = f"key-{i % 9}"  # several changes per key, interleaved across keys
        records.append(ev.modify(key, first=f"first-{i}-" + "x" * 200))

    response = process_event(stream_event(*records), sender=sender)

    assert response == {"batchItemFailures": []}
    messages = drain_queue(sqs, queue_url)
    assert len(messages) > 5  # 120 changes of ~0.5 kB cannot fit in 5 kB messages
    assert len(messages) < 60  # ...but they are packed, not one per change
    for m in messages:
        assert len(stream_handler.json.dumps(m.changes, separators=(",", ":"))) <= max_bytes
        assert m.body_bytes < 262_144
        assert {stream_handler.group_id_for(c, 4) for c in m.changes} == {m.group_id}
    sent = all_changes(messages)
    assert sorted(c["id"] for c in sent) == sorted(r["eventID"] for r in records)
    # Per group and per key, the queue holds the changes in stream order.
    by_group: dict[str, list[int]] = defaultdict(list)
    for m in messages:
        by_group[m.group_id].extend(int(c["seq"]) for c in m.changes)
    assert len(by_group) > 1
    for seqs in by_group.values():
        assert seqs == sorted(seqs)


def test_oversize_record_becomes_a_fetch_change(moto_server, sqs, queue_url):
    sender = CelerySender(make_config(moto_server, queue_url, SYNC_MAX_MESSAGE_BYTES=2_000))
    small = ev.insert("small")
    huge = ev.insert("huge", first="y" * 5_000)

    assert process_event(stream_event(small, huge), sender=sender) == {"batchItemFailures": []}

    changes = {c["id"]: c for c in all_changes(drain_queue(sqs, queue_url))}
    assert changes[huge["eventID"]]["fetch"] is True
    assert changes[huge["eventID"]]["image"] is None
    assert changes[huge["eventID"]]["keys"] == {"ChefId": {"S": "huge"}}
    assert changes[small["eventID"]]["image"] == small["dynamodb"]["NewImage"]


def test_same_batch_twice_has_the_same_dedup_ids_and_is_enqueued_once(sqs, queue_url, sender):
    records = [ev.insert(f"k{i}") for i in range(12)]
    batch = stream_event(*records)

    process_event(batch, sender=sender)
    process_event(batch, sender=sender)  # Lambda redelivers the same batch
    first = drain_queue(sqs, queue_url)
    # SQS dropped the redelivery (same dedup ids within 5 minutes; moto dedups against
    # messages still in the queue, so the queue is drained only afterwards).
    assert sorted(c["id"] for c in all_changes(first)) == sorted(r["eventID"] for r in records)

    calls: list[tuple[str, str]] = []
    process_event(batch, sender=lambda changes, group, dedup: calls.append((group, dedup)))
    assert sorted(calls) == sorted((m.group_id, m.dedup_id) for m in first)
    assert len({m.dedup_id for m in first}) == len(first)


def test_failed_send_reports_exactly_that_messages_records(sqs, queue_url, sender):
    records = [ev.insert(f"key-{i}") for i in range(40)]
    groups = [stream_handler.group_id_for(stream_handler.change_from_record(r), 4) for r in records]
    doomed = groups[0]

    def flaky(changes, group_id, dedup_id):
        if group_id == doomed:
            raise ConnectionError("SQS unreachable")
        sender(changes, group_id, dedup_id)

    response = process_event(stream_event(*records), sender=flaky)

    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    expected_failed = {
        r["dynamodb"]["SequenceNumber"] for r, g in zip(records, groups, strict=True) if g == doomed
    }
    assert failed == expected_failed
    sent = {c["id"] for c in all_changes(drain_queue(sqs, queue_url))}
    assert sent == {r["eventID"] for r, g in zip(records, groups, strict=True) if g != doomed}


def test_handler_entry_point_uses_the_module_sender(monkeypatch, sqs, queue_url, sender):
    monkeypatch.setattr(stream_handler, "SENDER", sender)
    record = ev.insert("entry")
    assert stream_handler.handler(stream_event(record), None) == {"batchItemFailures": []}
    (change,) = all_changes(drain_queue(sqs, queue_url))
    assert change["id"] == record["eventID"]


def test_unconfigured_queue_fails_every_record():
    sender = CelerySender(HandlerConfig.from_env({}))
    record = ev.insert("x")
    response = process_event(stream_event(record), sender=sender)
    assert response["batchItemFailures"] == [
        {"itemIdentifier": record["dynamodb"]["SequenceNumber"]}
    ]


def test_handler_module_works_without_django():
    """The Lambda package has no Django: import and convert with Django made unimportable
    (kombu only uses Django when it happens to be installed)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['django'] = None; "
        "from syncer.pipeline.stream import handler as h; "
        "from tests.syncer import events as ev; "
        "print(h.change_from_record(ev.insert('x'))['event'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "INSERT"
