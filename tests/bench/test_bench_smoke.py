"""Every bench script runs at a tiny size and prints the table it promises (`make bench`
must not rot between runs). Each runs as `make bench` runs it, in its own process, on its
own scratch database, with --no-record (bench/RESULTS.md must not change)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

pytestmark = pytest.mark.bench_smoke

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "RESULTS.md"


def run_bench(script: str, *args: str, timeout: float = 420) -> dict[str, list[list[str]]]:
    """Run bench/<script> and return its printed tables: title -> rows of cells."""
    db = connection.settings_dict
    results_before = RESULTS.read_bytes()
    env = {
        **os.environ,
        "BENCH_DB_HOST": db["HOST"] or "127.0.0.1",
        "BENCH_DB_PORT": str(db["PORT"] or 3306),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the bench sets its own
    database = f"backsync_bench_smoke_{uuid.uuid4().hex[:10]}"
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", "--no-record", "--database", database, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert RESULTS.read_bytes() == results_before, "--no-record still wrote RESULTS.md"
    tables = parse_tables(proc.stdout)
    assert tables, f"{script} printed no table:\n{proc.stdout[-3000:]}"
    return tables


def parse_tables(text: str) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    title = None
    for line in text.splitlines():
        heading = re.match(r"### (.+): \d{4}-\d\d-\d\d \d\d:\d\d UTC$", line)
        if heading:
            title = heading.group(1)
            tables[title] = []
        elif title and line.startswith("| ") and not line.startswith("|-"):
            tables[title].append([c.strip() for c in line.strip("|").split("|")])
    return {t: rows[1:] for t, rows in tables.items()}  # without the header row


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_apply_throughput(transactional_db):
    tables = run_bench(
        "apply_throughput.py",
        *("--changes", "400", "--keys", "80", "--groups", "4", "--naive-changes", "60"),
        *("--rtt-ms", "0", "--rtt-ms", "1", "--count-messages", "4", "--repeat", "2"),
    )
    rows = tables["Apply throughput"]
    label = "4 group(s), 25 changes/message"
    paths = [(r[0], r[1]) for r in rows]
    names = (
        "apply",
        "raw upsert",
        "guarded floor",
        "raw upsert, packed",
        "guarded floor, packed",
        "ORM guarded floor",
    )
    assert paths == [
        *((f"{p} ({label})", "0") for p in names),
        *((f"{p} ({label})", "1") for p in names),
        ("naive save()/delete() per change", "0"),
    ]
    trips = {r[0].split(" (")[0]: number(r[5]) for r in rows[: len(names)]}
    # The packed paths send a transaction's statements together: 1 and 2 round trips.
    assert trips["raw upsert, packed"] == 1
    assert trips["guarded floor, packed"] == 2
    # The ORM sends a statement a round trip: at least the lock read and a row write.
    assert trips["ORM guarded floor"] > trips["guarded floor, packed"]
    for row in rows[:-1]:
        assert number(row[2]) == 400 and number(row[4]) > 0
        # Counted through the proxy: a message costs one round trip at the very least
        # (however many statements the apply packs into one).
        assert number(row[5]) >= 1
    assert number(rows[-1][2]) == 60


def test_scale_out(transactional_db):
    tables = run_bench(
        "scale_out.py",
        *("--changes", "400", "--keys", "80", "--workers", "2", "--rtt-ms", "0", "--rtt-ms", "1"),
        *("--sweep-changes", "200", "--sweep-groups", "4", "--sweep-groups", "16"),
        *("--sweep-batches", "100", "--sweep-workers", "2"),
    )
    scale = tables["Scale-out (N workers, disjoint FIFO groups)"]
    assert [(r[0], r[1]) for r in scale] == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2")]
    assert all(number(r[3]) > 0 for r in scale)
    assert [r[4] for r in scale if r[1] == "1"] == ["1.00", "1.00"]
    sweep = tables["FIFO groups and relay batch (SYNC_MESSAGE_GROUPS)"]
    assert [(r[0], r[1], r[5]) for r in sweep] == [("4", "100", "2"), ("16", "100", "2")]
    # More groups, smaller messages (the same relay batches cut into more pieces).
    assert number(sweep[0][3]) > number(sweep[1][3])


@pytest.mark.e2e
def test_end_to_end(transactional_db):
    tables = run_bench(
        "end_to_end.py",
        *("--rate", "10", "--duration", "3", "--message-groups", "4", "--keys", "50"),
        *("--ceiling-seconds", "1", "--ceiling-threads", "2"),
        *("--relay-batch", "50", "--batching-window", "0.1"),
    )
    rows = tables["End to end (moto)"]
    assert [(r[0], r[1]) for r in rows] == [("4", "10")]
    assert number(rows[0][3]) > 0  # writes/s achieved, and every change applied (or it fails)


def test_reconcile_memory_on_moto(transactional_db):
    tables = run_bench("reconcile_memory.py", "--rows", "300", "--load-threads", "2")
    rows = tables["Reconcile (moto, rate)"]
    ways = ("reconcile (", "plain Scan + SELECT", "(engine's Scan alone")
    assert len(rows) == len(ways)
    assert all(r[0].startswith(w) for r, w in zip(rows, ways, strict=True))
    assert all(number(r[2]) > 0 for r in rows)  # rows/s per side


def test_reconcile_memory_synthetic(transactional_db):
    tables = run_bench("reconcile_memory.py", "--rows", "2000", "--synthetic")
    rows = tables["Reconcile (synthetic pages, memory)"]
    assert [r[0].split(" (")[0] for r in rows] == ["reconcile", "plain Scan + SELECT"]
    assert all(number(r[3]) > 0 for r in rows)  # peak RSS MiB


def test_capture_cost(transactional_db):
    if not (ROOT / "bench" / "capture_cost.py").exists():
        pytest.skip("bench/capture_cost.py comes with the capture triggers (issue 20)")
    tables = run_bench(
        "capture_cost.py",
        *("--writes", "40", "--changes", "200", "--keys", "50", "--repeats", "1"),
    )
    rows = tables["Capture trigger cost"]
    assert len(rows) >= 2
    assert rows[-1][0].startswith("applied change")
    assert all(number(r[1]) > 0 for r in rows)


# Each script under bench/ and the test above that runs it.
SMOKED = {
    "apply_throughput.py": test_apply_throughput,
    "scale_out.py": test_scale_out,
    "end_to_end.py": test_end_to_end,
    "reconcile_memory.py": test_reconcile_memory_on_moto,
    "capture_cost.py": test_capture_cost,
}


def test_every_bench_script_has_a_smoke_test():
    scripts = {
        p.name
        for p in (ROOT / "bench").glob("*.py")
        if p.name not in ("__init__.py", "common.py") and "__main__" in p.read_text()
    }
    assert scripts - set(SMOKED) == set(), "a bench script without a smoke test"


PROJECT_PACKAGES = ("syncer", "chefs", "config")


def test_benches_import_only_public_names():
    """A bench that reaches into a `_private` name breaks silently when it moves (issue 17:
    `_insert_head` moved to syncer.store.sql and `make bench` failed)."""
    import ast

    private = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                PROJECT_PACKAGES
            ):
                private += [
                    f"{path.name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert private == []
