"""Peak memory and time of the reconcile engine for N rows per side.

The MySQL side is real: N rows bulk-inserted into the mapped table (cheftable) of a
dedicated database. The DynamoDB side is fed to the engine by a synthetic page source
(DynamoDB JSON pages of 1,000 items, exactly what Scan returns), because loading 1,000,000
items into moto is not practical here (~300 puts/s). Everything after the scan pages is the
production code path: conversion through the mapping, spill to ReconcileItem, bucketed
compare with CRC32 ranges on MySQL. One item in 1,000 is made to differ.

    .venv/bin/python bench/reconcile_memory.py --rows 100000
    .venv/bin/python bench/reconcile_memory.py --rows 1000000 --no-tracemalloc

Prints JSON: rows, seconds, buckets, counts, baseline and peak RSS (MiB, from
getrusage: the process high-water mark), and the tracemalloc peak of Python allocations
made during the run (when enabled; it slows the run about 2x). For comparison it runs, in
a separate process (its own RSS high-water mark), the plain way: the same Scan pages
collected and a plain SELECT of the same rows, both held in memory; the reconcile rate is
given as a share of that plain rate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def setup(database: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="")
    cur = conn.cursor()
    cur.execute(f"DROP DATABASE IF EXISTS {database}")
    cur.execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    conn.close()
    os.environ["DATABASE_URL"] = f"mysql://root@127.0.0.1:3306/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    # DEBUG keeps every SQL statement (the spill's bulk inserts are ~100 kB each) in
    # connection.queries: that would be measured as the engine's memory. Production: off.
    os.environ["DEBUG"] = "false"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def load_mysql(rows: int) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for start in range(0, rows, 5000):
            values = [
                (f"F{i}", f"L{i}", f"L{i}#F{i}") for i in range(start, min(rows, start + 5000))
            ]
            cur.executemany(
                "INSERT INTO cheftable (cheffirst, cheflast, chef_id) VALUES (%s, %s, %s)", values
            )


def page_source(rows: int, page_size: int = 1000):
    def source(mapping, segment, total, consistent):
        # Segment s holds the keys i with i % total == s, like DynamoDB's hash segments.
        page = []
        for i in range(segment, rows, total):
            last = f"L{i}" if i % 1000 else f"X{i}"  # one in 1,000 differs
            page.append(
                {
                    "ChefId": {"S": f"L{i}#F{i}"},
                    "firstName": {"S": f"F{i}"},
                    "lastName": {"S": last},
                    "version": {"N": "1"},
                }
            )
            if len(page) == page_size:
                yield page
                page = []
        if page:
            yield page

    return source


def plain_scan_and_select(rows: int, segments: int) -> dict:
    """The baseline: every Scan page kept, one plain SELECT fetched whole."""
    from django.db import connection

    baseline = rss_mib()
    t0 = time.monotonic()
    source = page_source(rows)
    items = [
        item
        for seg in range(segments)
        for page in source(None, seg, segments, False)
        for item in page
    ]
    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, cheffirst, cheflast FROM cheftable")
        fetched = cur.fetchall()
    seconds = time.monotonic() - t0
    assert len(items) == len(fetched) == rows
    return {
        "seconds": round(seconds, 2),
        "rss_baseline_mib": round(baseline, 1),
        "rss_peak_mib": round(rss_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--bucket-rows", type=int, default=20_000)
    parser.add_argument("--database", default="backsync_bench_reconcile")
    parser.add_argument("--no-tracemalloc", action="store_true")
    parser.add_argument("--keep", action="store_true", help="Keep the bench database.")
    parser.add_argument("--plain-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.plain_only:  # the baseline, in its own process, on the loaded database
        os.environ["DATABASE_URL"] = f"mysql://root@127.0.0.1:3306/{args.database}"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
        os.environ["DEBUG"] = "false"
        import django

        django.setup()
        print(json.dumps(plain_scan_and_select(args.rows, args.segments)))
        return

    setup(args.database)
    t0 = time.monotonic()
    load_mysql(args.rows)
    load_seconds = time.monotonic() - t0
    import subprocess

    plain = json.loads(
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--plain-only",
                "--rows",
                str(args.rows),
                "--segments",
                str(args.segments),
                "--database",
                args.database,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    from chefs.mapping import CHEF_MAPPING
    from syncer.reconcile import ReconcileOptions, reconcile_run

    baseline = rss_mib()
    if not args.no_tracemalloc:
        tracemalloc.start()
    t0 = time.monotonic()
    report = reconcile_run(
        mappings=[CHEF_MAPPING],
        options=ReconcileOptions(segments=args.segments, bucket_rows=args.bucket_rows),
        page_source=page_source(args.rows),
    )
    seconds = time.monotonic() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20 if not args.no_tracemalloc else None
    m = report.mappings[0]
    print(
        json.dumps(
            {
                "rows_per_side": args.rows,
                "mysql_load_seconds": round(load_seconds, 1),
                "reconcile_seconds": round(seconds, 1),
                "segments": m.segments,
                "buckets": m.buckets,
                "counts": {k: v for k, v in m.counts.items() if v},
                "rss_baseline_mib": round(baseline, 1),
                "rss_peak_mib": round(rss_mib(), 1),
                "tracemalloc_peak_mib": round(traced_peak, 1) if traced_peak else None,
                "plain_scan_select": plain,
                "reconcile_rows_per_s": round(args.rows / seconds),
                "plain_rows_per_s": round(args.rows / plain["seconds"]),
                "rate_vs_plain": round(plain["seconds"] / seconds, 3),
            }
        )
    )
    if not args.keep:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(f"DROP DATABASE {args.database}")


if __name__ == "__main__":
    main()
