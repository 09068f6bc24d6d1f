"""Shared plumbing for the benchmarks: a private database, a private moto, result tables.

Every benchmark runs against the real local stack (MariaDB at DATABASE_HOST, a moto server
it starts itself on a free port) and never touches the development database: it creates
`backsync_bench` (or `--database`), migrates it, and drops it afterwards unless told to keep
it. Figures are printed as a table and appended to bench/RESULTS.md with the date and the
exact command line, so the file is a log of measured runs, newest last.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
DEFAULT_DB_HOST = os.environ.get("BENCH_DB_HOST", "127.0.0.1")
DEFAULT_DB_PORT = int(os.environ.get("BENCH_DB_PORT", "3306"))

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--database", default="backsync_bench", help="Scratch database (recreated).")
    p.add_argument("--keep-database", action="store_true", help="Do not drop it at the end.")
    p.add_argument(
        "--no-record", action="store_true", help=f"Print only; do not append to {RESULTS.name}."
    )
    return p


def database_url(name: str, *, host: str = DEFAULT_DB_HOST, port: int = DEFAULT_DB_PORT) -> str:
    return f"mysql://root@{host}:{port}/{name}"


def database_recreate(name: str) -> None:
    """Drop and create the scratch database (root, no password: the local MariaDB)."""
    import MySQLdb

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"refusing odd database name {name!r}")
    conn = MySQLdb.connect(host=DEFAULT_DB_HOST, port=DEFAULT_DB_PORT, user="root")
    try:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()


def database_drop(name: str) -> None:
    """Drop the scratch database, closing this process's Django connections to it first."""
    import MySQLdb
    from django.conf import settings

    if settings.configured:
        from django.db import connections

        connections.close_all()

    conn = MySQLdb.connect(host=DEFAULT_DB_HOST, port=DEFAULT_DB_PORT, user="root")
    try:
        conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


def django_setup(
    *, database: str, aws_endpoint: str | None = None, migrate: bool = True
) -> dict[str, str]:
    """Point this process at the scratch database (and moto), set Django up, migrate
    (`migrate=False` in a bench's child processes: the parent has done it).

    Returns the environment that subprocesses (worker, relay) need to share both."""
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": database_url(database),
        # DEBUG would keep every query in memory and slow the hot loops down.
        "DEBUG": "0",
        "DJANGO_LOG_LEVEL": "WARNING",
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "PYTHONUNBUFFERED": "1",
    }
    if aws_endpoint:
        env["AWS_ENDPOINT_URL"] = aws_endpoint
    os.environ.update(env)

    import django
    from django.core.management import call_command

    django.setup()
    if migrate:
        call_command("migrate", verbosity=0, interactive=False)
    return {**os.environ, **env}


# --- the route to MariaDB: direct, or through a delaying, counting proxy ------------------


def database_proxy(*, rtt_ms: float = 0.0):
    """A TCP proxy to the bench's MariaDB that adds `rtt_ms` to every client command (the
    round trip a statement costs to Aurora across a network) and counts the commands
    (`.commands`, `.heads`/`.kinds()`): see tests/proxy.py. Stop it with `.stop()`."""
    from tests.proxy import TcpProxy

    return TcpProxy(DEFAULT_DB_HOST, DEFAULT_DB_PORT, rtt_ms=rtt_ms).start()


_DELAY_PROCESS = """
import sys
from tests.proxy import TcpProxy
proxy = TcpProxy(sys.argv[1], int(sys.argv[2]), rtt_ms=float(sys.argv[3])).start()
print(proxy.port, flush=True)
sys.stdin.read()  # until the bench closes it, or exits
proxy.stop()
"""


class DelayProcess:
    """The delaying proxy in a process of its own, for timed runs: the network to Aurora is
    not in the client's process. `.port` to connect to, `.stop()` to end it, `.kind` says
    which program runs, `.pid` its process.

    - `kind == "c"`: bench/delayproxy.c, built on first use with `compiler` (`gcc`, or
      `$BENCH_CC`) into `binary` (bench/.build/, gitignored; rebuilt when the source is
      newer). Same delays as tests/proxy.py's TcpProxy (once per client command, the MySQL
      packet framing followed across chunks), less CPU taken from the 2 cores that MariaDB
      and the workers share. Measured at 1 ms (the proxy's utime+stime per `SELECT 1`):
      one connection, 5,000 statements back to back: C 0.042-0.050 ms, Python 0.060-0.090
      ms; 4 proxies at once, each client spinning 0.3 ms between statements:
      C 0.025-0.033 ms, Python 0.063-0.073 ms. The C figure is mostly the kernel's: the
      1 ms sleep alone (a bare clock_nanosleep loop) costs about 0.02 ms in this VM, and
      each round trip wakes the proxy three times (the command, the timer, the answer).
    - `kind == "python"`: TcpProxy in a Python subprocess, when the build fails (one line
      on stderr says so). Outside the client's process its Python does not share the
      measured process's GIL (in-process, its thread slowed the CPU-heavier paths more than
      the others).

    Counting round trips needs the in-process `database_proxy`."""

    source = ROOT / "bench" / "delayproxy.c"
    binary = ROOT / "bench" / ".build" / "delayproxy"
    compiler = os.environ.get("BENCH_CC", "gcc")

    def __init__(self, *, rtt_ms: float) -> None:
        import subprocess

        target = [DEFAULT_DB_HOST, str(DEFAULT_DB_PORT), str(rtt_ms)]
        binary = self.build()
        if binary is not None:
            self.kind, command = "c", [str(binary), *target]
        else:
            self.kind, command = "python", [sys.executable, "-c", _DELAY_PROCESS, *target]
        self._proc = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.pid = self._proc.pid
        line = self._proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"the delaying proxy ({self.kind}) did not start: {line!r}")
        self.port = int(line)

    @classmethod
    def build(cls) -> Path | None:
        """The C proxy's binary, compiled if missing or older than its source; None (and a
        line on stderr) if it cannot be built. Safe in several processes at once: each
        compiles to a name of its own and renames it into place."""
        import subprocess

        source, binary = cls.source, cls.binary
        try:
            if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
                return binary
            binary.parent.mkdir(parents=True, exist_ok=True)
            temp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
            try:
                done = subprocess.run(
                    [cls.compiler, "-O2", "-pthread", "-o", str(temp), str(source)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                if done.returncode != 0:
                    lines = done.stderr.strip().splitlines()
                    first = next((ln for ln in lines if "error" in ln), lines[-1] if lines else "")
                    raise OSError(f"{cls.compiler} exited {done.returncode}: {first}")
                os.replace(temp, binary)
            finally:
                temp.unlink(missing_ok=True)
        except (OSError, subprocess.SubprocessError) as exc:
            print(
                f"DelayProcess: cannot build {source.name} ({exc}); using the Python proxy",
                file=sys.stderr,
            )
            return None
        return binary

    def stop(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except Exception:
            self._proc.kill()
            self._proc.wait()


def database_route(proxy=None) -> None:
    """Send this process's Django connection through `proxy`, or straight to MariaDB."""
    from django.db import connection

    connection.close()  # the next statement reconnects with the new address
    if proxy is None:
        connection.settings_dict.update(HOST=DEFAULT_DB_HOST, PORT=str(DEFAULT_DB_PORT))
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(proxy.port))


def round_trip_ms(samples: int = 100) -> float:
    """Mean wall time of `SELECT 1` on this process's connection: one round trip."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT 1")  # connect first
        start = time.perf_counter()
        for _ in range(samples):
            cur.execute("SELECT 1")
            cur.fetchall()
        return (time.perf_counter() - start) / samples * 1000


def database_quiesce(*, timeout: float = 60.0, below: int = 200) -> None:
    """Wait until InnoDB has purged the row versions that earlier runs deleted (its history
    list), so a run does not pay for the purge of the run before it: with 2 cores, the
    purge threads compete with whatever is measured next. Both engines report the length in
    information_schema.INNODB_METRICS (trx_rseg_history_len, on by default)."""
    from django.db import connection

    query = (
        "SELECT `count` FROM information_schema.INNODB_METRICS WHERE name = 'trx_rseg_history_len'"
    )
    deadline = time.monotonic() + timeout
    with connection.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute(query)
            row = cur.fetchone()
            if row is None or row[0] < below:
                return
            time.sleep(0.1)


# --- timing and figures -----------------------------------------------------------------


@contextmanager
def timed() -> Iterator[list[float]]:
    """`with timed() as t: ...` then t[0] is the elapsed wall time in seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table_format(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (also readable on a terminal)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def results_append(*, title: str, table: str, notes: Sequence[str] = (), record: bool = True):
    """Print the table; append it to bench/RESULTS.md with date and command line."""
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"### {title}: {stamp}", "", f"`{command}` on {machine()}", "", table, ""]
    block += [f"- {n}" for n in notes]
    text = "\n".join(block).rstrip() + "\n"
    print("\n" + text)
    if record:
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nAppended by `make bench`; newest last.\n")
        with RESULTS.open("a") as fh:
            fh.write("\n" + text)
        print(f"(appended to {RESULTS.relative_to(ROOT)})")
