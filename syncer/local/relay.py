"""The local stand-in for Lambda's DynamoDB event source mapping (moto runs no mappings).

For each registered mapping's table it reads the stream shard by shard (parents before
children), builds events shaped exactly as Lambda builds them, calls the stream handler,
and keeps its position per shard in MySQL (`ShardCheckpoint`), as the mapping does:

- batch size and batching window; new shards start at TRIM_HORIZON (or LATEST), known
  shards resume AFTER_SEQUENCE_NUMBER of their checkpoint: a restart has no gap and no
  full replay;
- partial failure (`batchItemFailures`) or a raising handler: retry from the lowest failed
  sequence number, bounded, with backoff; records that still fail are kept as
  `FailedChange` (source stream, payload = the Lambda record), like Lambda's on-failure
  destination, and the shard moves on (a poison record never blocks it);
- an expired or trimmed iterator is renewed from the checkpoint; a closed shard read to its
  end is marked finished and its children go on; shards are re-discovered periodically;
- `stop()` (SIGTERM/SIGINT in the command) ends the loop without checkpointing past
  records that were not handed on."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from syncer.local.records import (
    ShardState,
    failed_stream_record_keep,
    lambda_record,
    order_parents_first,
    record_log_fields,
    record_sequence,
)
from syncer.models import ShardCheckpoint
from syncer.ops import metrics
from syncer.registry import registry

logger = logging.getLogger(__name__)


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")


ITERATOR_LOST_ERRORS = {"ExpiredIteratorException", "TrimmedDataAccessException"}


GET_RECORDS_MAX = 1000  # DynamoDB Streams' GetRecords limit


class RelayError(Exception):
    """The relay cannot run as asked (unknown table, stream disabled...)."""


class _RetryBatch(Exception):
    """Some records of a batch failed: hand them to the handler again after the backoff."""


class _Stopping(Exception):
    """The relay was asked to stop during a backoff."""


def default_handler() -> Handler:
    """The real stream handler, configured from Django settings through its environment
    variables, exactly as the Lambda is configured from its function environment.

    The variables are handed to the handler's config, not written into os.environ, so
    they do not leak into subprocesses started later by the same process."""
    from syncer.pipeline.stream import handler as stream_handler

    environ = {
        **os.environ,
        "SYNC_QUEUE_URL": settings.SYNC_QUEUE_URL,
        "SYNC_QUEUE_NAME": settings.SYNC_QUEUE_NAME,
        "AWS_REGION": settings.AWS_REGION,
        "SYNC_MESSAGE_GROUPS": str(settings.SYNC_MESSAGE_GROUPS),
    }
    if settings.AWS_ENDPOINT_URL:
        environ["AWS_ENDPOINT_URL"] = settings.AWS_ENDPOINT_URL
    else:
        environ.pop("AWS_ENDPOINT_URL", None)
    if stream_handler.SENDER.config != stream_handler.HandlerConfig.from_env(environ):
        stream_handler.configure(environ)
    return stream_handler.handler


@dataclass
class RelayStats:
    batches: int = 0
    records: int = 0  # handed on (sent or kept as failed)
    failed: int = 0  # kept as FailedChange
    retries: int = 0


@dataclass
class StreamRelay:
    """Reads the streams of the registered mappings' tables and drives `handler`."""

    handler: Handler | None = None
    tables: Iterable[str] | None = None
    batch_size: int = 100
    batching_window: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    max_retries: int = 3
    retry_backoff: float = 0.5
    poll_interval: float = 1.0
    rediscover_interval: float = 30.0
    dynamodb: Any = None
    streams: Any = None
    stats: RelayStats = field(default_factory=RelayStats)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise RelayError("batch size must be between 1 and 10000")
        if self.starting_position not in STARTING_POSITIONS:
            raise RelayError(f"starting position must be one of {', '.join(STARTING_POSITIONS)}")
        if self.max_retries < 0 or self.batching_window < 0 or self.poll_interval <= 0:
            raise RelayError("retries and batching window must be >= 0, poll interval > 0")
        if self.handler is None:
            self.handler = default_handler()
        if self.dynamodb is None or self.streams is None:
            from syncer.aws import dynamodb_client, streams_client

            self.dynamodb = self.dynamodb or dynamodb_client()
            self.streams = self.streams or streams_client()
        self._stop = threading.Event()
        self._shards: dict[tuple[str, str], ShardState] = {}
        self._discovered_at = 0.0

    # --- control ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def table_names(self) -> list[str]:
        registered = [m.table_name for m in registry.all()]
        if self.tables is None:
            return registered
        wanted = list(dict.fromkeys(self.tables))
        unknown = [t for t in wanted if t not in registered]
        if unknown:
            raise RelayError(
                f"no registered mapping for table(s) {', '.join(unknown)}; "
                f"registered: {', '.join(registered) or 'none'}"
            )
        return wanted

    def run(self, *, once: bool = False) -> RelayStats:
        """Relay until stopped; with `once`, until every shard is read to its current end."""
        tables = self.table_names()
        self.discover(tables)
        while not self.stopping:
            if time.monotonic() - self._discovered_at > self.rediscover_interval:
                try:
                    self.discover(tables)
                except (ClientError, BotoCoreError):
                    logger.exception("re-discovering shards failed; retrying later")
                    self._discovered_at = time.monotonic()
            progressed = False
            for shard in self._ready_shards():
                if self.stopping:
                    break
                try:
                    progressed |= self._step(shard, once=once)
                except (ClientError, BotoCoreError):
                    # AWS hiccup: like the event source mapping, keep trying (from the
                    # checkpoint, with a fresh iterator) rather than give up.
                    logger.exception("shard %s: reading failed; retrying", shard.label)
                    shard.iterator = None
                    self._stop.wait(self.poll_interval)
            if once and all(s.caught_up for s in self._ready_shards()):
                # A finished parent makes its children ready: look once more before leaving.
                if not progressed:
                    break
                continue
            if not progressed:
                self._stop.wait(self.poll_interval)
        return self.stats

    # --- discovery ----------------------------------------------------------------------
    def discover(self, tables: Iterable[str]) -> None:
        for table in tables:
            try:
                description = self.dynamodb.describe_table(TableName=table)["Table"]
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ResourceNotFoundException":
                    raise RelayError(f"DynamoDB table {table} does not exist") from exc
                raise
            stream_arn = description.get("LatestStreamArn")
            if not stream_arn:
                logger.warning("table %s has no stream; nothing to relay", table)
                continue
            for shard in order_parents_first(self._list_shards(stream_arn)):
                key = (stream_arn, shard["ShardId"])
                closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
                if key in self._shards:
                    self._shards[key].closed = closed
                    continue
                checkpoint, created = ShardCheckpoint.objects.get_or_create(
                    stream_arn=stream_arn,
                    shard_id=shard["ShardId"],
                    defaults={"parent_shard_id": shard.get("ParentShardId") or ""},
                )
                state = ShardState(
                    table=table,
                    stream_arn=stream_arn,
                    shard_id=shard["ShardId"],
                    parent_id=shard.get("ParentShardId") or "",
                    checkpoint=checkpoint,
                    closed=closed,
                )
                self._shards[key] = state
                logger.info(
                    "shard %s: %s",
                    state.label,
                    "new" if created else f"resuming after {checkpoint.sequence_number or '-'}",
                )
        self._discovered_at = time.monotonic()

    def _list_shards(self, stream_arn: str) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamArn": stream_arn}
        while True:
            desc = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards.extend(desc.get("Shards", []))
            last = desc.get("LastEvaluatedShardId")
            if not last:
                return shards
            kwargs["ExclusiveStartShardId"] = last

    def _ready_shards(self) -> list[ShardState]:
        """Unfinished shards whose parent is finished or no longer listed."""
        ready = []
        for state in self._shards.values():
            if state.checkpoint.finished:
                continue
            parent = self._shards.get((state.stream_arn, state.parent_id))
            if parent is not None and not parent.checkpoint.finished:
                continue
            ready.append(state)
        return ready

    # --- reading ------------------------------------------------------------------------
    def _new_iterator(self, state: ShardState) -> str | None:
        seq = state.checkpoint.sequence_number
        kwargs: dict[str, Any] = {"StreamArn": state.stream_arn, "ShardId": state.shard_id}
        if seq:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=seq)
        else:
            kwargs["ShardIteratorType"] = self.starting_position
        try:
            return self.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TrimmedDataAccessException" or not seq:
                raise
            # The checkpoint is older than the stream keeps (24 h in AWS): what lay between
            # is gone from the stream; start from the oldest record still there.
            logger.error(
                "shard %s: records after %s were trimmed before they were read; "
                "continuing at TRIM_HORIZON (run reconcile to repair)",
                state.label,
                seq,
            )
            kwargs.pop("SequenceNumber")
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            return self.streams.get_shard_iterator(**kwargs)["ShardIterator"]

    def _get_records(self, state: ShardState, limit: int) -> list[dict[str, Any]]:
        if state.iterator is None:
            state.iterator = self._new_iterator(state)
        try:
            resp = self.streams.get_records(
                ShardIterator=state.iterator, Limit=min(limit, GET_RECORDS_MAX)
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ITERATOR_LOST_ERRORS:
                raise
            logger.warning(
                "shard %s: %s; renewing the iterator from the checkpoint",
                state.label,
                exc.response["Error"]["Code"],
            )
            state.iterator = self._new_iterator(state)
            resp = self.streams.get_records(
                ShardIterator=state.iterator, Limit=min(limit, GET_RECORDS_MAX)
            )
        state.iterator = resp.get("NextShardIterator")
        return resp.get("Records", [])

    def _gather(self, state: ShardState, *, once: bool) -> list[dict[str, Any]]:
        """Up to batch_size records, waiting at most the batching window for more."""
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.batching_window
        while len(records) < self.batch_size and not self.stopping:
            got = self._get_records(state, self.batch_size - len(records))
            records.extend(
                lambda_record(r, stream_arn=state.stream_arn, region=settings.AWS_REGION)
                for r in got
            )
            if state.iterator is None:  # closed shard read to its end
                break
            remaining = deadline - time.monotonic()
            if not got:
                if once or remaining <= 0:
                    break
                self._stop.wait(min(self.poll_interval, remaining))
            elif remaining <= 0:
                break
        state.caught_up = len(records) < self.batch_size
        return records

    def _step(self, state: ShardState, *, once: bool) -> bool:
        """Read and hand on one batch of a shard; True if anything happened."""
        records = self._gather(state, once=once)
        if self.stopping:
            return False  # abandoned: not checkpointed, read again after a restart
        if records:
            self._deliver(state, records)
        if state.iterator is None and not self.stopping:
            self._finish(state)
            return True
        return bool(records)

    def _finish(self, state: ShardState) -> None:
        ShardCheckpoint.objects.filter(pk=state.checkpoint.pk).update(finished=True)
        state.checkpoint.finished = True
        logger.info("shard %s is closed and read to its end", state.label)
        self._discovered_at = 0.0  # look for its children now

    # --- delivering ---------------------------------------------------------------------
    def _invoke(self, records: list[dict[str, Any]]) -> tuple[set[str] | None, str]:
        """Call the handler. Returns the failed sequence numbers (None: the whole batch)."""
        try:
            response = self.handler({"Records": records}, None)
        except Exception as exc:
            logger.exception("stream handler raised on a batch of %d record(s)", len(records))
            return None, f"stream handler raised {type(exc).__name__}: {exc}"
        if response is None:
            return set(), ""
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not isinstance(failures, list):
            return None, f"stream handler returned an invalid response: {response!r}"[:1000]
        seqs = {record_sequence(r) for r in records}
        failed: set[str] = set()
        for item in failures:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not ident or ident not in seqs:
                # Lambda reads an empty or unknown identifier as "the whole batch failed".
                return None, f"stream handler reported an invalid itemIdentifier {ident!r}"
            failed.add(ident)
        return failed, "stream handler reported the record in batchItemFailures"

    def _deliver(self, state: ShardState, records: list[dict[str, Any]]) -> None:
        pending = records
        # Backoff as Lambda's: retry_backoff, then doubled each time; max_retries retries.
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential(multiplier=self.retry_backoff, exp_base=2),
            sleep=self._backoff_sleep,
            retry=retry_if_exception_type(_RetryBatch),
            reraise=True,
        )
        try:
            for attempt_manager in retrying:
                with attempt_manager:
                    attempt = attempt_manager.retry_state.attempt_number
                    failed, error = self._invoke(pending)
                    if failed is not None and not failed:
                        self._checkpoint(state, pending, batch_size=len(records))
                        return
                    if failed is None:
                        first = 0
                    else:
                        first = min(
                            i for i, r in enumerate(pending) if record_sequence(r) in failed
                        )
                    if first:
                        # Everything before the lowest failure was handed on.
                        self._checkpoint(state, pending[:first], batch_size=0)
                        pending = pending[first:]
                    if attempt > self.max_retries:
                        still = (
                            pending
                            if failed is None
                            else [r for r in pending if record_sequence(r) in failed]
                        )
                        self._keep_failed(state, pending, still, error=error, attempts=attempt)
                        return
                    for r in pending:
                        if failed is None or record_sequence(r) in failed:
                            logger.warning(
                                "shard %s: record %s seq %s key %s failed (attempt %d of %d): %s",
                                state.label,
                                r.get("eventID"),
                                record_sequence(r),
                                r["dynamodb"].get("Keys"),
                                attempt,
                                self.max_retries + 1,
                                error,
                                extra=record_log_fields(state, r),
                            )
                    self.stats.retries += 1
                    raise _RetryBatch
        except _Stopping:
            return  # stopping: the rest is read again after a restart

    def _backoff_sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping

    def _checkpoint(
        self, state: ShardState, handed_on: list[dict[str, Any]], *, batch_size: int
    ) -> None:
        cp = state.checkpoint
        cp.sequence_number = record_sequence(handed_on[-1])
        cp.records_total += len(handed_on)
        if batch_size:
            cp.last_batch_size = batch_size
            cp.last_batch_at = timezone.now()
            self.stats.batches += 1
        cp.save(
            update_fields=[
                "sequence_number",
                "records_total",
                "last_batch_size",
                "last_batch_at",
                "updated_at",
            ]
        )
        self.stats.records += len(handed_on)
        metrics.relay_batch_record(
            table=state.table, records=len(handed_on), batch=bool(batch_size)
        )
        logger.debug(
            "shard %s: %d record(s) handed on, checkpoint %s",
            state.label,
            len(handed_on),
            cp.sequence_number,
            extra={"sequence": cp.sequence_number, "shard": state.shard_id},
        )

    @transaction.atomic
    def _keep_failed(
        self,
        state: ShardState,
        pending: list[dict[str, Any]],
        still_failing: list[dict[str, Any]],
        *,
        error: str,
        attempts: int,
    ) -> None:
        """Lambda's on-failure destination: keep the records, then move the shard on.

        One transaction, so a crash cannot record them without the checkpoint or the
        reverse (either way they would be seen again and counted once more)."""
        for record in still_failing:
            failed_stream_record_keep(
                record=record, table=state.table, error=error, attempts=attempts
            )
            logger.error(
                "shard %s: record %s seq %s key %s kept as a failed change after %d attempts",
                state.label,
                record.get("eventID"),
                record_sequence(record),
                record["dynamodb"].get("Keys"),
                attempts,
                extra=record_log_fields(state, record),
            )
        self.stats.failed += len(still_failing)
        self._checkpoint(state, pending, batch_size=len(pending))
