"""Reconcile: rows per second and peak memory, against a plain Scan + SELECT of the same data.

Two ways of running it:

- **Rate** (the default; `--rows 100000`): N rows are bulk-inserted into the mapped MySQL
  table (cheftable) of a scratch database, and the same N items are loaded into a moto
  server the bench starts itself on a free loopback port (BatchWriteItem, 25 items per
  call, `--load-threads` threads; the load time is printed). Then, each in its own process
  (so each has its own RSS high-water mark), against that moto and that database:
  - **reconcile**: the production code path, `reconcile_run` with the engine's default
    options (its own parallel Scan through boto3, spill, bucketed compare);
  - **plain**: what a naive diff does: one plain Scan paginator collecting every item in a
    list, plus one plain SELECT of the same rows fetched whole;
  - **scan alone** (for the "where the time goes" note): the engine's parallel Scan of the
    same segments through boto3, items counted and dropped: the floor moto sets.
  The rate target is reconcile >= 0.7x the plain rate.
- **Memory at 1,000,000 rows** (`--synthetic`): loading 1,000,000 items into moto is not
  practical here, so the DynamoDB side is fed to the engine by a synthetic page source
  (pages cut at 1 MB of items as Scan cuts them, about 18,000 of these items, each
  serialized to Scan's response JSON and parsed by botocore's own parser, so that a page
  takes the memory a real one takes) instead of moto's Scan. The bench's moto then holds
  only the items that differ (one in 1,000), which a reconcile may read again by key.
  Everything after the pages is the production code path (conversion through the
  mapping, spill, snapshot of the MySQL side's key hashes, bucketed compare). Run it at
  100,000 and at 1,000,000 rows: the two peak RSS figures must be about equal (memory that
  does not grow with the table). The plain way is run on the same synthetic pages for its
  memory; with no network and no moto behind its Scan, its rate is no yardstick, so no
  rate target applies in this mode.

One item in 1,000 is made to differ (lastName), so every run must report exactly
N/1000 "different" and the rest "equal", or the bench stops. As after a sync, every key
has its key state, and 1% more keys are tombstones (removed from both stores).

    .venv/bin/python bench/reconcile_memory.py --rows 100000
    .venv/bin/python bench/reconcile_memory.py --rows 1000000 --synthetic

Prints a table and appends it to bench/RESULTS.md (`--no-record`: print only). Peak RSS
is getrusage's high-water mark of each process; "growth" is peak minus the RSS the process
had after Django was set up, before the measured work.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

TABLE = "chef"  # settings.DYNAMO_CHEF_TABLE's default; the bench's own moto holds it


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- data ---------------------------------------------------------------------------------


def first(i: int) -> str:
    return f"F{i}"


def last(i: int, *, dynamo: bool) -> str:
    # One key in 1,000 has another last name in DynamoDB.
    return f"X{i}" if dynamo and i % 1000 == 0 else f"L{i}"


def key(i: int) -> str:
    return f"L{i}#F{i}"


def dynamo_item(i: int) -> dict:
    return {
        "ChefId": {"S": key(i)},
        "firstName": {"S": first(i)},
        "lastName": {"S": last(i, dynamo=True)},
        "version": {"N": "1"},
    }


def load_mysql(rows: int) -> None:
    """The rows, and a key state per key as the sync leaves them (apply and backfill write
    one for every key), plus tombstones for 1% more keys removed from both stores (they
    are read by the compare, and are no drift)."""
    from django.db import connection

    state = (
        "INSERT INTO syncer_keystate (mapping, `key`, sequence, deleted, item_version, "
        "applied_at) VALUES (%s, %s, %s, %s, %s, %s)"  # only placeholders: one statement
    )
    now = datetime.now(UTC).replace(tzinfo=None)
    with connection.cursor() as cur:
        for start in range(0, rows, 5000):
            batch = range(start, min(rows, start + 5000))
            cur.executemany(
                "INSERT INTO cheftable (cheffirst, cheflast, chef_id) VALUES (%s, %s, %s)",
                [(first(i), last(i, dynamo=False), key(i)) for i in batch],
            )
            cur.executemany(state, [("chef", key(i), 1, False, 1, now) for i in batch])
            cur.executemany(
                state, [("chef", f"Gone#{i}", 1, True, 1, now) for i in batch if i % 100 == 0]
            )


def moto_table_create(client) -> None:
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "ChefId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "ChefId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def load_moto(client_factory, indexes: range, threads: int) -> None:
    """The items of `indexes`: BatchWriteItem, 25 items per call, `threads` writers on
    interleaved batches."""
    batches = [indexes[s : s + 25] for s in range(0, len(indexes), 25)]
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        client = client_factory()
        try:
            for batch in batches[n::threads]:
                request = {TABLE: [{"PutRequest": {"Item": dynamo_item(i)}} for i in batch]}
                while request:
                    request = client.batch_write_item(RequestItems=request)["UnprocessedItems"]
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


PAGE_BYTES = 1_000_000  # DynamoDB (and moto) end a Scan page at 1 MB of items


def item_size(item: dict) -> int:
    """DynamoDB's item size for string and number attributes: names plus values."""
    return sum(len(name) + len(next(iter(typed.values()))) for name, typed in item.items())


def synthetic_pages(rows: int):
    """A PageSource without moto: segment s holds the keys i with i % total == s, cut into
    pages at 1 MB of items as Scan cuts them (about 18,000 of these items), each page
    serialized to the JSON a Scan response carries and parsed back by botocore's own
    response parser, so a page costs the memory and parsing a real one costs."""
    import botocore.parsers
    import botocore.session

    model = botocore.session.get_session().get_service_model("dynamodb")
    shape = model.operation_model("Scan").output_shape
    parser = botocore.parsers.create_parser(model.metadata["protocol"])

    def parsed(page: list[dict]) -> list[dict]:
        body = json.dumps({"Items": page, "Count": len(page), "ScannedCount": len(page)})
        page.clear()  # the items live in DynamoDB, not in the client: only the bytes arrive
        response = {"body": body.encode(), "headers": {}, "status_code": 200}
        del body
        return parser.parse(response, shape)["Items"]

    def source(mapping, segment, total, consistent):
        page, size = [], 0
        for i in range(segment, rows, total):
            item = dynamo_item(i)
            size += item_size(item)
            if size > PAGE_BYTES:
                box, page, size = [parsed(page)], [], item_size(item)
                yield box.pop()  # like dynamo_scan_pages: the generator keeps no reference
            page.append(item)
        if page:
            box, page = [parsed(page)], []
            yield box.pop()

    return source


# --- the measured ways, each in its own process -------------------------------------------


def child_setup() -> None:
    """Django on the loaded scratch database (environment from the parent); no migrate."""
    import django

    django.setup()


def plain_select() -> int:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, cheffirst, cheflast FROM cheftable")
        return len(cur.fetchall())


def way_plain(args) -> dict:
    """Every Scan item kept in a list (one plain paginator), one plain SELECT fetched whole."""
    baseline = rss_mib()
    t0 = time.perf_counter()
    pages: list[tuple[int, float]] = []  # (items, seconds) per Scan page
    if args.synthetic:
        source = synthetic_pages(args.rows)
        items = [item for page in source(None, 0, 1, False) for item in page]
    else:
        import boto3

        client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        items = []
        t_page = time.perf_counter()
        for page in client.get_paginator("scan").paginate(TableName=TABLE):
            items.extend(page["Items"])
            now = time.perf_counter()
            pages.append((len(page["Items"]), now - t_page))
            t_page = now
    scan_seconds = time.perf_counter() - t0
    fetched = plain_select()
    seconds = time.perf_counter() - t0
    if len(items) != args.rows or fetched != args.rows:
        raise SystemExit(f"plain: {len(items)} items, {fetched} rows, expected {args.rows}")
    return {
        "seconds": seconds,
        "scan_seconds": scan_seconds,
        "pages": pages,
        "rss_baseline_mib": baseline,
        "rss_peak_mib": rss_mib(),
    }


def way_scan_alone(args) -> dict:
    """The engine's parallel Scan (same segments, same client), items counted and dropped."""
    from concurrent.futures import ThreadPoolExecutor

    from chefs.mapping import CHEF_MAPPING
    from syncer.reconcile.report import ReconcileOptions
    from syncer.reconcile.scan import dynamo_scan_pages

    segments = args.segments or ReconcileOptions().segments
    baseline = rss_mib()
    t0 = time.perf_counter()

    def count(segment: int) -> int:
        return sum(len(p) for p in dynamo_scan_pages(CHEF_MAPPING, segment, segments, False))

    with ThreadPoolExecutor(max_workers=segments) as pool:
        total = sum(pool.map(count, range(segments)))
    seconds = time.perf_counter() - t0
    if total != args.rows:
        raise SystemExit(f"scan alone: {total} items, expected {args.rows}")
    return {"seconds": seconds, "rss_baseline_mib": baseline, "rss_peak_mib": rss_mib()}


def way_reconcile(args) -> dict:
    import tracemalloc

    from chefs.mapping import CHEF_MAPPING
    from syncer.reconcile.report import ReconcileOptions
    from syncer.reconcile.run import reconcile_run

    overrides = {}
    if args.segments:
        overrides["segments"] = args.segments
    if args.bucket_rows:
        overrides["bucket_rows"] = args.bucket_rows
    options = ReconcileOptions(**overrides)
    baseline = rss_mib()
    if args.tracemalloc:
        tracemalloc.start()
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    marks: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        marks[phase] = time.perf_counter()  # the last page spilled, the last bucket compared

    t0 = time.perf_counter()
    report = reconcile_run(
        mappings=[CHEF_MAPPING],
        options=options,
        page_source=synthetic_pages(args.rows) if args.synthetic else None,
        progress=progress,
    )
    end = time.perf_counter()
    seconds = end - t0
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if args.tracemalloc else None
    m = report.mappings[0]
    counts = {k: v for k, v in m.counts.items() if v}
    expected = {
        "equal": args.rows - (args.rows + 999) // 1000,
        "different": (args.rows + 999) // 1000,
    }
    if counts != expected:
        raise SystemExit(f"reconcile found {counts}, expected {expected}")
    return {
        "seconds": seconds,
        "phases": {
            "scan_spill": marks["scan"] - t0,
            "compare": marks["compare"] - marks["scan"],
            "cleanup": end - marks["compare"],
        },
        "segments": m.segments,
        "buckets": m.buckets,
        "counts": counts,
        "rss_baseline_mib": baseline,
        "rss_peak_mib": rss_mib(),
        "tracemalloc_peak_mib": traced,
    }


WAYS = {"plain": way_plain, "scan": way_scan_alone, "reconcile": way_reconcile}


def run_child(way: str, env: dict[str, str]) -> dict:
    argv = [a for a in sys.argv[1:] if a not in ("--no-record",)]
    result = subprocess.run(
        [sys.executable, __file__, *argv, "--way", way],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(f"{way} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the bench ----------------------------------------------------------------------------


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.set_defaults(database="backsync_bench_reconcile")
    p.add_argument("--rows", type=int, default=100_000, help="Rows per side.")
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="DynamoDB side from an in-memory page source, no moto (the 1,000,000-row memory "
        "figure); no rate target applies.",
    )
    p.add_argument("--segments", type=int, help="Override the engine's default segments.")
    p.add_argument("--bucket-rows", type=int, help="Override the engine's default bucket size.")
    p.add_argument("--load-threads", type=int, default=4, help="moto loading threads.")
    p.add_argument("--tracemalloc", action="store_true", help="Also trace Python allocations.")
    p.add_argument("--profile", metavar="FILE", help="cProfile the reconcile run into FILE.")
    p.add_argument("--way", choices=sorted(WAYS), help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.way:  # a child: one measured way, printed as JSON
        child_setup()
        print(json.dumps(WAYS[args.way](args)))
        return

    from tests.plugins.aws import MotoServer, free_port

    moto = None
    logs = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    common.database_recreate(args.database)
    try:
        # Synthetic mode too: the Scan's pages come from memory, but a reconcile may read
        # the keys it found different again from DynamoDB; those items are in this moto.
        moto = MotoServer(free_port(), logs / "moto.log")
        moto.start()
        env = common.django_setup(database=args.database, aws_endpoint=moto.url)
        with common.timed() as t_mysql:
            load_mysql(args.rows)
        print(f"MySQL: {args.rows:,} rows loaded in {t_mysql[0]:.1f} s", flush=True)
        load_seconds = None
        if moto is not None:
            import boto3

            def client_factory():
                return boto3.client("dynamodb", endpoint_url=moto.url)

            moto_table_create(client_factory())
            if args.synthetic:  # only the items that differ (one in 1,000)
                load_moto(client_factory, range(0, args.rows, 1000), args.load_threads)
        if not args.synthetic:
            with common.timed() as t_moto:
                load_moto(client_factory, range(args.rows), args.load_threads)
            load_seconds = t_moto[0]
            print(
                f"moto: {args.rows:,} items loaded in {load_seconds:.1f} s "
                f"({args.rows / load_seconds:,.0f} items/s, BatchWriteItem x25, "
                f"{args.load_threads} threads)",
                flush=True,
            )
        from django.db import connections

        connections.close_all()

        results = {}
        for way in ("plain", "reconcile") if args.synthetic else ("plain", "scan", "reconcile"):
            results[way] = run_child(way, env)
            print(f"{way}: {results[way]['seconds']:.2f} s", flush=True)
        record(args, results, load_seconds, t_mysql[0])
    finally:
        if moto is not None:
            moto.stop()
        if not args.keep_database:
            common.database_drop(args.database)


def record(args, results: dict, load_seconds: float | None, mysql_seconds: float) -> None:
    plain, rec = results["plain"], results["reconcile"]
    source = "synthetic pages (no moto)" if args.synthetic else "moto"

    def growth(r: dict) -> str:
        return (
            f"{r['rss_peak_mib'] - r['rss_baseline_mib']:.1f} MiB "
            f"({r['rss_baseline_mib']:.1f} -> {r['rss_peak_mib']:.1f})"
        )

    rows = [
        (
            f"reconcile ({rec['segments']} segments, {rec['buckets']} buckets)",
            rec["seconds"],
            args.rows / rec["seconds"],
            rec["rss_peak_mib"],
            growth(rec),
        ),
        ("plain Scan + SELECT", plain["seconds"], args.rows / plain["seconds"],
         plain["rss_peak_mib"], growth(plain)),
    ]  # fmt: skip
    if "scan" in results:
        scan = results["scan"]
        rows.append(
            (
                f"(engine's Scan alone, {rec['segments']} segments, items dropped)",
                scan["seconds"],
                args.rows / scan["seconds"],
                scan["rss_peak_mib"],
                growth(scan),
            )
        )
    table = common.table_format(
        ["way", "seconds", "rows/s per side", "peak RSS MiB", "RSS growth"], rows
    )
    ratio = plain["seconds"] / rec["seconds"]
    notes = [
        f"{args.rows:,} rows per side; DynamoDB side: {source}; MySQL load {mysql_seconds:.1f} s"
    ]
    if args.synthetic:
        notes.append(
            f"memory figure: reconcile peak RSS {rec['rss_peak_mib']:.1f} MiB; the plain way "
            f"{plain['rss_peak_mib']:.1f} MiB (it holds both sides). Pages from the in-memory "
            "source (no network, no moto): no rate target in this mode"
        )
    else:
        notes.append(
            f"moto load: {load_seconds:.1f} s ({args.rows / load_seconds:,.0f} items/s, "
            f"BatchWriteItem x25, {args.load_threads} threads)"
        )
        notes.append(
            f"rate: reconcile / plain = **{ratio:.2f}x** (target >= 0.7x: "
            f"{'met' if ratio >= 0.7 else 'not met'})"
        )
        pages = plain["pages"]
        if pages:
            notes.append(
                f"plain Scan: {plain['scan_seconds']:.2f} s in {len(pages)} pages of "
                f"{pages[0][0]:,} items (1 MB); page seconds first {pages[0][1]:.2f}, "
                f"last {pages[-1][1]:.2f}, all: "
                + ", ".join(f"{s:.2f}" for _, s in pages)
                + "; SELECT "
                f"{plain['seconds'] - plain['scan_seconds']:.2f} s"
            )
    phases = rec["phases"]
    notes.append(
        f"reconcile phases: scan + spill {phases['scan_spill']:.2f} s (to the last page "
        f"written), compare {phases['compare']:.2f} s ({rec['buckets']} buckets), unkeyed "
        f"rows and cleanup {phases['cleanup']:.2f} s"
    )
    if rec.get("tracemalloc_peak_mib") is not None:
        notes.append(
            f"tracemalloc peak of the reconcile run: {rec['tracemalloc_peak_mib']:.1f} MiB"
        )
    common.results_append(
        title=f"Reconcile ({'synthetic pages, memory' if args.synthetic else 'moto, rate'})",
        table=table,
        notes=notes,
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
