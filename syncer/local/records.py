"""Stream records as Lambda hands them to the handler, and the shards they come from: the
event record built from a GetRecords record (`lambda_record`), a shard's position
(`ShardState`), shards ordered parents first, and keeping a record the relay gave up on
as a FailedChange (Lambda's on-failure destination, locally)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncer.models import FailedChange, ShardCheckpoint
from syncer.pipeline.apply import failed_change_keep
from syncer.registry import registry

EVENT_VERSION = "1.1"


# --- Lambda-shaped records -------------------------------------------------------------
def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    return float(value) if value is not None else None


def lambda_record(raw: dict[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """A GetRecords record (boto3: datetimes, no eventSourceARN) -> the record Lambda sends."""
    ddb = dict(raw.get("dynamodb") or {})
    if "ApproximateCreationDateTime" in ddb:
        ddb["ApproximateCreationDateTime"] = _epoch(ddb["ApproximateCreationDateTime"])
    record = {
        "eventID": raw.get("eventID"),
        "eventName": raw.get("eventName"),
        "eventVersion": EVENT_VERSION,
        "eventSource": "aws:dynamodb",
        "awsRegion": raw.get("awsRegion") or region,
        "eventSourceARN": stream_arn,
        "dynamodb": ddb,
    }
    if "userIdentity" in raw:  # TTL deletions carry it
        record["userIdentity"] = raw["userIdentity"]
    return record


def record_sequence(record: dict[str, Any]) -> str:
    return record["dynamodb"]["SequenceNumber"]


# --- shards ----------------------------------------------------------------------------
@dataclass
class ShardState:
    table: str
    stream_arn: str
    shard_id: str
    parent_id: str
    checkpoint: ShardCheckpoint
    iterator: str | None = None
    closed: bool = False  # AWS gave an EndingSequenceNumber
    caught_up: bool = False  # the last read returned nothing new

    @property
    def label(self) -> str:
        return f"{self.table}/{self.shard_id}"


def order_parents_first(shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """DescribeStream shards, each after its parent (when the parent is listed)."""
    by_id = {s["ShardId"]: s for s in shards}
    ordered: list[dict[str, Any]] = []
    seen: set[str] = set()

    def visit(shard: dict[str, Any], trail: tuple[str, ...] = ()) -> None:
        sid = shard["ShardId"]
        if sid in seen or sid in trail:
            return
        parent = by_id.get(shard.get("ParentShardId") or "")
        if parent is not None:
            visit(parent, (*trail, sid))
        seen.add(sid)
        ordered.append(shard)

    for shard in shards:
        visit(shard)
    return ordered


def record_log_fields(state: ShardState, record: dict[str, Any]) -> dict[str, Any]:
    """key, sequence and event_id of a stream record, for structured (JSON) log lines."""
    keys = record["dynamodb"].get("Keys") or {}
    try:
        key = registry.for_table(state.table).key_from_keys(keys)
    except (LookupError, ValueError):
        key = str(keys)
    return {"key": key, "sequence": record_sequence(record), "event_id": record.get("eventID")}


def failed_stream_record_keep(
    *, record: dict[str, Any], table: str, error: str, attempts: int
) -> FailedChange:
    """Keep a Lambda-shaped stream record that the handler could not hand on.

    A record seen again (same eventID) counts its new attempts on the same row."""
    ddb = record.get("dynamodb") or {}
    seq = ddb.get("SequenceNumber")
    mapping_name = key = ""
    try:
        mapping = registry.for_table(table)
        mapping_name = mapping.name
        key = mapping.key_from_keys(ddb.get("Keys") or {})
    except (LookupError, ValueError):
        pass  # kept without them: the payload still has the keys
    return failed_change_keep(
        event_id=str(record.get("eventID") or f"{table}:{seq}"),
        source=FailedChange.Source.STREAM,
        mapping=mapping_name,
        key=str(key),
        event_name=str(record.get("eventName") or ""),
        sequence=seq,
        payload=record,
        error=error,
        attempts=attempts,
    )
