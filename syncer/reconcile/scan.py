"""The DynamoDB side of a reconcile: parallel Scan segments, each item turned into its mapped
row and spilled to syncer_reconcileitem by key hash (CRC32), so memory stays flat whatever
the table's size; and dropping a run's spill."""

from __future__ import annotations

import json
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection

from syncer.models import (
    ReconcileItem,
    ReconcileKey,
)
from syncer.reconcile.report import ReconcileOptions
from syncer.registry import Mapping, MappingError
from syncer.store.sql import SqlValues, insert_head

HASH_SPACE = 2**32  # CRC32 values


SPILL_STATEMENT_BYTES = 1_000_000  # well under max_allowed_packet (MySQL 64 MB, MariaDB 16)


MYSQL_CHUNK = 2000


DROP_CHUNK = 20_000


def key_hash(key: str) -> int:
    return zlib.crc32(key.encode("utf-8"))


def bucket_range(bucket: int, buckets: int) -> tuple[int, int]:
    """The half-open hash range [lo, hi) of a bucket."""
    return bucket * HASH_SPACE // buckets, (bucket + 1) * HASH_SPACE // buckets


# One encoder for every row (the C encoder; DjangoJSONEncoder only for Decimal, dates...).
_ENCODER = DjangoJSONEncoder(sort_keys=True)


def canonical_text(row: dict[str, Any]) -> str:
    """Field values as JSON text, keys sorted: what is spilled and compared. Two rows with
    the same text are equal; rows whose texts differ are compared field by field (1 and
    1.0 differ as text, not as values)."""
    return _ENCODER.encode(row)


def canonical(row: dict[str, Any]) -> dict[str, Any]:
    """Field values as JSON would carry them, so both sides compare alike."""
    return json.loads(canonical_text(row))


# A source of scan pages: (mapping, segment, total_segments, consistent) -> pages of items.
PageSource = Callable[[Mapping, int, int, bool], Iterable[list[dict[str, Any]]]]


def dynamo_scan_pages(
    mapping: Mapping, segment: int, total_segments: int, consistent: bool
) -> Iterator[list[dict[str, Any]]]:
    """Pages of one parallel-Scan segment of the mapping's table (DynamoDB JSON items)."""
    from syncer.aws import dynamo_errors, dynamodb_scan_client

    client = dynamodb_scan_client()
    kwargs: dict[str, Any] = {
        "TableName": mapping.table_name,
        "Segment": segment,
        "TotalSegments": total_segments,
        "ConsistentRead": consistent,
    }
    while True:
        with dynamo_errors():
            page = client.scan(**kwargs)
        start = page.get("LastEvaluatedKey")
        box = [page.get("Items", [])]
        del page
        # Yielded from a list, so this frame holds no reference: the caller frees the page.
        yield box.pop()
        if not start:
            return
        kwargs["ExclusiveStartKey"] = start


INVALID_KEY = "key: not a valid key"  # the spilled error of an item whose key is refused


# A spilled item: the values of _SPILL_COLUMNS, in order.
_SPILL_COLUMNS = ("run_id", "mapping", "segment", "key_hash", "key", "values", "error", "version")


SpillRow = tuple[Any, ...]


def spill_row(run_id: int, mapping: Mapping, segment: int, item: dict[str, Any]) -> SpillRow:
    typed = item.get(mapping.key_attribute)
    try:
        key = mapping.key_from_keys({mapping.key_attribute: typed})
    except MappingError:
        key = json.dumps(typed)[:255]
        return (run_id, mapping.name, segment, key_hash(key), key, "", INVALID_KEY, None)
    values, error = "", ""
    try:
        values = canonical_text(mapping.row_from_image(item))
    except MappingError as exc:
        error = str(exc)[:2000]
    version = mapping.version_from_image(item)
    return (run_id, mapping.name, segment, key_hash(key), key, values, error, version)


def _spill_rows(
    run_id: int, mapping: Mapping, segment: int, page: list[dict[str, Any]]
) -> list[SpillRow]:
    rows = [spill_row(run_id, mapping, segment, item) for item in page]
    # In key-hash order: the rows of one compare bucket then sit together in the spill
    # table (its clustered index is in insertion order), so reading a bucket back reads a
    # few pages per spilled page instead of one page per item.
    rows.sort(key=_by_hash)
    return rows


def _by_hash(row: SpillRow) -> int:
    return row[3]


def segment_scan(
    *,
    run_id: int,
    mapping: Mapping,
    segment: int,
    total_segments: int,
    consistent: bool,
    pages: Iterable[list[dict[str, Any]]] | None = None,
) -> int:
    """Scan one segment and spill its items. Returns how many items were spilled."""
    pages = pages if pages is not None else dynamo_scan_pages(
        mapping, segment, total_segments, consistent
    )  # fmt: skip
    count = 0
    for page in pages:
        rows = _spill_rows(run_id, mapping, segment, page)
        _spill_write(rows)
        count += len(rows)
    return count


def _spill_write(rows: list[SpillRow]) -> None:
    """Multi-row INSERTs of about SPILL_STATEMENT_BYTES each (the driver's escaping, built
    here: executemany's per-value binding was five times slower)."""
    if not rows:
        return
    head = insert_head(ReconcileItem._meta.db_table, _SPILL_COLUMNS)
    values = SqlValues()
    with connection.cursor() as cur:
        for row in rows:
            values.add(row)
            if values.size >= SPILL_STATEMENT_BYTES:
                cur.execute(values.sql(head))
                values.clear()
        if values.rows:
            cur.execute(values.sql(head))


def scan_parallel(
    *,
    run_id: int,
    mapping: Mapping,
    options: ReconcileOptions,
    source: PageSource,
    progress: Callable[[str, int], None],
) -> int:
    """Local parallel Scan, overlapped with the spill: one thread per segment reads its
    pages and converts them to spill rows (while other threads wait on DynamoDB or this
    one on MySQL), this thread writes them (every database write stays on this thread's
    connection). The queue is bounded: at most `segments` converted pages wait, besides
    the page each reader holds."""
    pages: queue.Queue = queue.Queue(maxsize=options.segments)
    done = object()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read(segment: int) -> None:
        try:
            for page in source(mapping, segment, options.segments, options.consistent):
                if stop.is_set():
                    return
                rows = _spill_rows(run_id, mapping, segment, page)
                del page  # the raw page is the bulk of the memory: not kept while waiting
                pages.put(rows)
                del rows
        except BaseException as exc:  # noqa: BLE001 - handed to the spilling thread
            errors.append(exc)
        finally:
            pages.put(done)

    count = 0
    with ThreadPoolExecutor(max_workers=options.segments) as pool:
        for segment in range(options.segments):
            pool.submit(read, segment)
        finished = 0
        try:
            while finished < options.segments:
                rows = pages.get()
                if rows is done:
                    finished += 1
                    continue
                if errors:
                    break
                _spill_write(rows)
                count += len(rows)
                progress("scan", len(rows))
                del rows
        finally:
            stop.set()
            while finished < options.segments:  # unblock readers waiting on a full queue
                if pages.get() is done:
                    finished += 1
    if errors:
        raise errors[0]
    return count


def spill_drop(run_id: int) -> int:
    """Delete a run's spilled rows in primary-key ranges of DROP_CHUNK: a run's rows were
    inserted together, so each DELETE walks a stretch of the clustered index in order (one
    DELETE by run_id walks it in key-hash order: random pages), and no transaction holds a
    million row locks. Returns how many rows were deleted."""
    quote = connection.ops.quote_name
    deleted = 0
    with connection.cursor() as cur:
        for model in (ReconcileItem, ReconcileKey):
            table = quote(model._meta.db_table)
            cur.execute(f"SELECT MIN(id), MAX(id) FROM {table} WHERE run_id = %s", [run_id])
            lo, hi = cur.fetchone()
            if lo is None:
                continue
            for start in range(lo, hi + 1, DROP_CHUNK):
                cur.execute(
                    f"DELETE FROM {table} WHERE id >= %s AND id < %s AND run_id = %s",
                    [start, start + DROP_CHUNK, run_id],
                )
                deleted += cur.rowcount
    return deleted
