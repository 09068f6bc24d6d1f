"""bench/delayproxy.c through bench.common.DelayProcess: the delay it adds per round trip,
the bytes it passes on, its exit on stop(), and the fallback to the Python proxy when it
cannot be built. Against the local MariaDB (127.0.0.1:3306, root, no password)."""

from __future__ import annotations

import shutil
import time

import MySQLdb
import pytest

from bench.common import DEFAULT_DB_HOST, DEFAULT_DB_PORT, DelayProcess

pytestmark = pytest.mark.bench_smoke

SAMPLES = 50
needs_compiler = pytest.mark.skipif(
    shutil.which(DelayProcess.compiler) is None, reason=f"no {DelayProcess.compiler}"
)


def _connect(port: int):
    return MySQLdb.connect(host="127.0.0.1", port=port, user="root")


def _round_trip_ms(conn) -> float:
    """Mean wall time of `SELECT 1` over SAMPLES, after one to warm up."""
    cur = conn.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()
    start = time.perf_counter()
    for _ in range(SAMPLES):
        cur.execute("SELECT 1")
        assert cur.fetchall() == ((1,),)
    return (time.perf_counter() - start) / SAMPLES * 1000


@pytest.fixture
def proxy_factory():
    started: list[DelayProcess] = []

    def start(rtt_ms: float) -> DelayProcess:
        proxy = DelayProcess(rtt_ms=rtt_ms)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def _direct_ms() -> float:
    conn = MySQLdb.connect(host=DEFAULT_DB_HOST, port=DEFAULT_DB_PORT, user="root")
    try:
        return _round_trip_ms(conn)
    finally:
        conn.close()


@needs_compiler
def test_rtt_1ms_adds_one_millisecond_per_round_trip(proxy_factory):
    proxy = proxy_factory(1.0)
    assert proxy.kind == "c"
    conn = _connect(proxy.port)
    try:
        through = _round_trip_ms(conn)
    finally:
        conn.close()
    direct = _direct_ms()
    assert direct < 0.5, direct
    assert 1.0 <= through < 3.0, through


@needs_compiler
def test_rtt_0_adds_nothing_measurable_and_passes_large_results_intact(proxy_factory):
    proxy = proxy_factory(0)
    assert proxy.kind == "c"
    conn = _connect(proxy.port)
    try:
        through = _round_trip_ms(conn)
        cur = conn.cursor()
        # Over 64 KB (one recv) and several MySQL packets; the answer's bytes are checked.
        cur.execute("SELECT REPEAT('x', 5000000)")
        assert cur.fetchall() == (("x" * 5_000_000,),)
        # A multi-statement query: one command, several result sets.
        cur.execute("SELECT 1; SELECT REPEAT('z', 100000); SELECT 3")
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        assert results == [((1,),), (("z" * 100000,),), ((3,),)]
        after = _round_trip_ms(conn)
    finally:
        conn.close()
    direct = _direct_ms()
    assert through < direct + 0.5, (through, direct)
    assert after < direct + 0.5, (after, direct)


@needs_compiler
def test_framing_stays_in_step_after_a_command_of_0xffffff_bytes(proxy_factory):
    """A command of 0xFFFFFF bytes or more goes as packets of 0xFFFFFF bytes continued by
    packets of sequence ids 1, 2, ... (here one empty one): only the first is a command.
    16 MB is the local MariaDB's max_allowed_packet, so the command is 0xFFFFFF exactly."""
    proxy = proxy_factory(1.0)
    conn = _connect(proxy.port)
    try:
        head, tail = "SELECT LENGTH('", "')"
        filler = 0xFFFFFF - 1 - len(head) - len(tail)  # 1: the COM_QUERY byte
        cur = conn.cursor()
        start = time.perf_counter()
        cur.execute(head + "y" * filler + tail)
        assert cur.fetchall() == ((filler,),)
        assert time.perf_counter() - start >= 0.001
        # Out of step, the next packets would be read from the wrong bytes: no delays.
        assert 1.0 <= _round_trip_ms(conn) < 3.0
    finally:
        conn.close()


@needs_compiler
def test_stop_ends_the_process(proxy_factory):
    proxy = proxy_factory(1.0)
    conn = _connect(proxy.port)  # an open connection does not keep it alive
    try:
        proxy.stop()
        assert proxy._proc.poll() == 0
        with pytest.raises(MySQLdb.OperationalError):
            conn.cursor().execute("SELECT 1")
    finally:
        conn.close()
    with pytest.raises(MySQLdb.OperationalError):
        _connect(proxy.port)


def test_falls_back_to_python_when_the_build_fails(proxy_factory, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(DelayProcess, "binary", tmp_path / "delayproxy")
    monkeypatch.setattr(DelayProcess, "compiler", "no-such-compiler-for-delayproxy")
    proxy = proxy_factory(1.0)
    assert proxy.kind == "python"
    assert "using the Python proxy" in capsys.readouterr().err
    conn = _connect(proxy.port)
    try:
        assert 1.0 <= _round_trip_ms(conn) < 5.0
    finally:
        conn.close()
    proxy.stop()
    assert proxy._proc.poll() is not None


def test_a_broken_source_falls_back_too(proxy_factory, monkeypatch, tmp_path, capsys):
    source = tmp_path / "delayproxy.c"
    source.write_text("this is not C\n")
    monkeypatch.setattr(DelayProcess, "source", source)
    monkeypatch.setattr(DelayProcess, "binary", tmp_path / "build" / "delayproxy")
    proxy = proxy_factory(0)
    assert proxy.kind == "python"
    assert "cannot build delayproxy.c" in capsys.readouterr().err
    assert not list((tmp_path / "build").iterdir())  # no temp file left behind
