"""Prometheus metrics of the sync, served at /metrics.

Two sources, combined at scrape time:

- Events (changes applied and failed, lag, relay batches, outbox publishes) are counted
  where they happen: in the worker, the relay and the web process (admin replays). Across
  processes they meet through prometheus-client's multiprocess mode: every process started
  with `PROMETHEUS_MULTIPROC_DIR` set (one directory shared by web, worker and relay on a
  machine; emptied when the stack starts) writes its values there, and /metrics reads them
  all. Without the variable, /metrics shows only the serving process's own counters.
- State (outbox backlog, open failed changes and conflicts, last apply and relay batch)
  is read from MySQL at scrape time by `SyncStateCollector`, so it is right whichever
  process changed it, also where web and worker run on different machines (AWS).

Counters are bumped after the transaction that did the work commits (`on_commit`), so a
rolled-back batch that is retried is not counted twice.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

from django.db import transaction
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
if os.environ.get(MULTIPROC_ENV):
    # prometheus-client writes one file per process there; it must exist before any write.
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

CHANGES_APPLIED = Counter(
    "backsync_changes_applied",
    "Stream changes processed by the apply service (stale: older than what was applied).",
    ["mapping", "event", "outcome"],
)
CHANGES_FAILED = Counter(
    "backsync_changes_failed",
    "Changes kept as failed (each failed attempt counts).",
    ["mapping", "event", "source"],
)
SYNC_LAG = Histogram(
    "backsync_sync_lag_seconds",
    "Stream record time to MySQL commit, per applied change.",
    ["mapping"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
)
RELAY_BATCHES = Counter(
    "backsync_relay_batches", "Batches the relay handed to the stream handler.", ["table"]
)
RELAY_RECORDS = Counter("backsync_relay_records", "Stream records the relay handed on.", ["table"])
OUTBOX_PUBLISHES = Counter(
    "backsync_outbox_publishes",
    "Outbox publish attempts by outcome (published, conflict, noop, retry).",
    ["mapping", "outcome"],
)


# --- recording (called by the services; cheap, never raises into the sync) --------------


def _after_commit(func) -> None:
    # Outside a transaction on_commit runs at once.
    transaction.on_commit(func)


def applied_record(
    *, mapping: str, counts: dict[tuple[str, str], int], lags: dict[float, int]
) -> None:
    """Count a batch's processed changes: `counts` per (event name, outcome), `lags` the
    applied changes' lags in seconds, as value -> how many (a batch has few distinct ones:
    stream times are coarse)."""

    def bump() -> None:
        for (event, outcome), n in counts.items():
            _applied_series(mapping, event, outcome).inc(n)
        if lags:
            histogram = _lag_series(mapping)
            for lag, n in lags.items():
                _observe_many(histogram, max(lag, 0.0), n)

    _after_commit(bump)


# A labelled series is the same object for as long as the process lives; labels() checks
# and locks on every call, a few times per applied batch.
@functools.lru_cache(maxsize=1024)
def _applied_series(mapping: str, event: str, outcome: str):
    return CHANGES_APPLIED.labels(mapping=mapping, event=event, outcome=outcome)


@functools.lru_cache(maxsize=256)
def _lag_series(mapping: str):
    return SYNC_LAG.labels(mapping=mapping)


def _observe_many(histogram: Histogram, value: float, count: int) -> None:
    """`count` observations of the same value, as that many observe() calls would record
    them, in one write per series (in multiprocess mode each write is one to a shared file)."""
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:  # a prometheus-client without these internals: the public way
        for _ in range(count):
            histogram.observe(value)
        return
    total.inc(value * count)
    for bound, bucket in zip(bounds, buckets, strict=True):
        if value <= bound:
            bucket.inc(count)
            break


def failed_record(*, mapping: str, event: str, source: str) -> None:
    _after_commit(
        lambda: CHANGES_FAILED.labels(
            mapping=mapping or "unknown", event=event or "unknown", source=source
        ).inc()
    )


def relay_batch_record(*, table: str, records: int, batch: bool) -> None:
    """Records handed on by the relay (called after its checkpoint is saved)."""
    RELAY_RECORDS.labels(table=table).inc(records)
    if batch:
        RELAY_BATCHES.labels(table=table).inc()


def outbox_publish_record(*, mapping: str, outcome: str) -> None:
    OUTBOX_PUBLISHES.labels(mapping=mapping, outcome=outcome).inc()


# --- state from the database, read at scrape time ----------------------------------------


class SyncStateCollector(Collector):
    """Gauges computed from MySQL when /metrics is scraped."""

    def collect(self) -> Iterator[Metric]:
        from syncer.ops import dashboard

        counts = dashboard.counts_get()
        backlog = GaugeMetricFamily(
            "backsync_outbox_backlog",
            "Outbox entries by status (pending: not yet in DynamoDB).",
            labels=["status"],
        )
        backlog.add_metric(["pending"], counts.outbox_pending)
        backlog.add_metric(["failed"], counts.outbox_failed)
        yield backlog
        yield GaugeMetricFamily(
            "backsync_failed_changes_open",
            "Failed changes waiting for an operator (replay or discard).",
            value=counts.failed_open,
        )
        yield GaugeMetricFamily(
            "backsync_conflicts_open", "Conflicts not yet reviewed.", value=counts.conflicts_open
        )
        last_apply = GaugeMetricFamily(
            "backsync_last_apply_timestamp_seconds",
            "When the apply service last committed a change (Unix time).",
        )
        if counts.last_apply is not None:
            last_apply.add_metric([], counts.last_apply.timestamp())
        yield last_apply
        relay = GaugeMetricFamily(
            "backsync_relay_last_batch_timestamp_seconds",
            "When the relay last handed on a batch, per shard (Unix time).",
            labels=["shard"],
        )
        for cp in dashboard.checkpoints_get():
            if cp.last_batch_at is not None:
                relay.add_metric([cp.shard_id], cp.last_batch_at.timestamp())
        yield relay


def metrics_registry() -> CollectorRegistry:
    """The registry /metrics serves: every process's events plus the database state."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=path)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessCollector())
    registry.register(SyncStateCollector())
    return registry


class _ProcessCollector(Collector):
    """This process's own metrics (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_render() -> tuple[bytes, str]:
    return generate_latest(metrics_registry()), CONTENT_TYPE_LATEST
