"""What the two stores hold, read directly (no application code), for end-to-end checks."""

from __future__ import annotations

import boto3
from django.conf import settings
from django.db import connection

from chefs.dynamo import ChefItem


def mysql_rows() -> dict[str | None, tuple[str, str]]:
    """chef_id -> (first, last) as a legacy reader sees cheftable."""
    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, cheffirst, cheflast FROM cheftable")
        return {k: (f, last) for k, f, last in cur.fetchall()}


def dynamo_rows() -> dict[str, tuple[str, str]]:
    return {i.ChefId: (i.firstName, i.lastName) for i in ChefItem.scan(consistent_read=True)}


def stream_records(key: str | None = None) -> list[dict]:
    """Every record the chef table's stream holds (moto keeps them all), or those of `key`:
    one per DynamoDB write."""
    ddb = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    streams = boto3.client("dynamodbstreams", endpoint_url=settings.AWS_ENDPOINT_URL)
    arn = ddb.describe_table(TableName="chef")["Table"]["LatestStreamArn"]
    out: list[dict] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            out += page["Records"]
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
    if key is not None:
        out = [r for r in out if r["dynamodb"]["Keys"]["ChefId"]["S"] == key]
    return out


# --- what "converged" means: checks shared by the fault and end-to-end tests ---------------
# The applied-change log is read only here, so that a change to its shape (one row per
# message instead of one per change) needs only these helpers to adapt.


def reconcile_drift(*, mappings: list | None = None):
    """A read-only reconcile run over every registered mapping (consistent reads): fields,
    tombstones, unkeyed rows, keys missing on either side."""
    from syncer.reconcile.report import ReconcileOptions
    from syncer.reconcile.run import reconcile_run
    from syncer.registry import registry

    return reconcile_run(
        mappings=mappings if mappings is not None else registry.all(),
        options=ReconcileOptions(segments=2, consistent=True),
    )


def assert_no_drift(*, mappings: list | None = None) -> None:
    report = reconcile_drift(mappings=mappings)
    assert report.drift == 0, [
        {"mapping": m.mapping, "counts": m.counts, "samples": m.samples}
        for m in report.mappings
        if m.drift
    ]


def log_entries(*, key: str | None = None, outcome: str | None = None) -> list[dict]:
    """The changes the apply logged (AppliedBatch.entries, as dicts), oldest batch first;
    only those of `key` and `outcome` when given."""
    from syncer.models import AppliedBatch

    entries = []
    for batch in AppliedBatch.objects.order_by("applied_at", "id"):
        for entry in batch.entry_dicts():
            if key is not None and entry["key"] != key:
                continue
            if outcome is not None and entry["outcome"] != outcome:
                continue
            entries.append(entry)
    return entries


def logged_event_ids() -> set[str]:
    """Stream event ids the apply logged (applied or stale)."""
    return {entry["event_id"] for entry in log_entries()}


def applied_more_than_once() -> dict[str, int]:
    """Stream event ids the apply logged as applied (not stale) more than once."""
    from collections import Counter

    counts = Counter(entry["event_id"] for entry in log_entries(outcome="applied"))
    return {event_id: n for event_id, n in counts.items() if n > 1}


def _seq(record: dict) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


def _version(image: dict | None) -> int | None:
    value = (image or {}).get("version", {}).get("N")
    return int(value) if value is not None else None


def key_state_drift(*, records: list[dict], failed: set[str] = frozenset()) -> dict:
    """Keys whose sync bookkeeping is not where the stream left them: per key, the key
    state must hold the newest record's sequence number (compared as an integer), its
    tombstone (REMOVE) and its item version, leaving out the records that failed.
    Returns key -> (found, expected); empty when all agree."""
    from syncer.models import KeyState

    newest: dict[str, dict] = {}
    for r in records:
        if r["eventID"] in failed:
            continue
        key = r["dynamodb"]["Keys"]["ChefId"]["S"]
        if key not in newest or _seq(r) > _seq(newest[key]):
            newest[key] = r
    expected = {
        k: (
            _seq(r),
            r["eventName"] == "REMOVE",
            None if r["eventName"] == "REMOVE" else _version(r["dynamodb"].get("NewImage")),
        )
        for k, r in newest.items()
    }
    found = {
        s.key: (int(s.sequence), s.deleted, s.item_version)
        for s in KeyState.objects.filter(mapping="chef")
    }
    # A key given to a legacy row and then deleted before its first publish reached DynamoDB
    # keeps the placeholder state the key assignment made (sequence 0, nothing applied).
    placeholder = (0, False, None)
    return {
        k: (found.get(k), expected.get(k))
        for k in set(found) | set(expected)
        if found.get(k) != expected.get(k)
        and not (k not in expected and found.get(k) == placeholder)
    }


def dynamo_writes_per_version(records: list[dict]) -> dict[tuple[str, int, int], int]:
    """(key, generation, version) -> stream records that wrote that item version, for the
    items the application writes (those with a version attribute). A generation ends at
    each REMOVE: a re-created item starts again at version 1. Each legacy write is one
    conditional DynamoDB write of the next version, so every count must be 1."""
    counts: dict[tuple[str, int, int], int] = {}
    generation: dict[str, int] = {}
    for r in sorted(records, key=_seq):
        key = r["dynamodb"]["Keys"]["ChefId"]["S"]
        if r["eventName"] == "REMOVE":
            generation[key] = generation.get(key, 0) + 1
            continue
        version = _version(r["dynamodb"].get("NewImage"))
        if version is not None:
            at = (key, generation.get(key, 0), version)
            counts[at] = counts.get(at, 0) + 1
    return counts


def assert_synced(*, poison: set[str] = frozenset(), timeout: float = 60) -> dict[str, int]:
    """What every end-to-end and fault test ends with, once the pipeline has drained:
    reconcile finds no drift; every stream record is in the apply log except the `poison`
    ones, which are exactly the changes kept as failed; no event applied twice; each key's
    state at its newest record; each application write of an item version made once."""
    from syncer.models import FailedChange
    from tests.procs import wait_until

    records = stream_records()
    ids = {r["eventID"] for r in records}
    assert poison <= ids, "poison ids that the stream does not hold"

    def failed() -> set[str]:
        return set(
            FailedChange.objects.filter(status=FailedChange.Status.FAILED).values_list(
                "event_id", flat=True
            )
        )

    wait_until(lambda: failed() == poison, timeout=timeout, what="exactly the poison failed")
    wait_until(
        lambda: not (ids - poison) - logged_event_ids(),
        timeout=timeout,
        what="every good stream record in the apply log",
    )
    assert_no_drift()
    assert not applied_more_than_once(), applied_more_than_once()
    assert not key_state_drift(records=records, failed=poison), key_state_drift(
        records=records, failed=poison
    )
    doubled = {at: n for at, n in dynamo_writes_per_version(records).items() if n > 1}
    assert not doubled, f"item versions written more than once: {doubled}"
    return {"records": len(records), "rows": len(mysql_rows())}
