"""The TCP proxy the fault tests and the benches put in front of MariaDB (tests/proxy.py)."""

from __future__ import annotations

import time

import MySQLdb
import pytest
from django.db import connection

from tests.proxy import TcpProxy, command_kind


@pytest.fixture
def target() -> tuple[str, int]:
    db = connection.settings_dict
    return db["HOST"] or "127.0.0.1", int(db["PORT"] or 3306)


def _connect(port: int):
    return MySQLdb.connect(host="127.0.0.1", port=port, user="root", connect_timeout=5)


def test_counts_one_command_per_statement_whatever_its_size(target):
    proxy = TcpProxy(*target).start()
    try:
        conn = _connect(proxy.port)
        before = proxy.commands
        proxy.heads = []
        cur = conn.cursor()
        for _ in range(5):
            cur.execute("SELECT 1")
        # ~300 kB: many recv() chunks, still one command.
        cur.execute("SELECT LENGTH(%s)", ["x" * 300_000])
        assert cur.fetchone() == (300_000,)
        conn.commit()  # COMMIT is a round trip too
        assert proxy.commands - before == 7
        assert proxy.kinds() == {"SELECT": 6, "COMMIT": 1}
        conn.close()
    finally:
        proxy.stop()


def test_delays_each_command_by_the_round_trip(target):
    proxy = TcpProxy(*target, rtt_ms=50).start()
    try:
        conn = _connect(proxy.port)
        cur = conn.cursor()
        start = time.perf_counter()
        for _ in range(8):
            cur.execute("SELECT 1")
        elapsed = time.perf_counter() - start
        assert elapsed >= 8 * 0.05
        # A 2 MB statement arrives in 30+ chunks (1.5 s if each paid it) but pays the round
        # trip once; the bound leaves room for a loaded machine.
        start = time.perf_counter()
        cur.execute("SELECT LENGTH(%s)", ["y" * 2_000_000])
        assert time.perf_counter() - start < 10 * 0.05
        conn.close()
    finally:
        proxy.stop()


def test_cut_resets_connections_and_restore_accepts_again(target):
    proxy = TcpProxy(*target).start()
    try:
        conn = _connect(proxy.port)
        conn.cursor().execute("SELECT 1")
        proxy.cut()
        with pytest.raises(MySQLdb.OperationalError):
            conn.cursor().execute("SELECT 1")
        with pytest.raises(MySQLdb.OperationalError):
            _connect(proxy.port)
        proxy.restore()
        again = _connect(proxy.port)
        again.cursor().execute("SELECT 1")
        again.close()
        assert proxy.connections == 2
    finally:
        proxy.stop()


def test_refuses_a_negative_round_trip(target):
    with pytest.raises(ValueError, match="rtt_ms"):
        TcpProxy(*target, rtt_ms=-1)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("INSERT INTO `syncer_keystate` (`mapping`) VALUES ('a')", "INSERT syncer_keystate"),
        ("DELETE FROM `cheftable` WHERE `chef_id` IN ('a')", "DELETE cheftable"),
        ("SELECT `key` FROM `syncer_keystate` FORCE INDEX (u)", "SELECT syncer_keystate"),
        ("SET autocommit=0", "SET autocommit=0"),
        ("COMMIT", "COMMIT"),
        (
            "START TRANSACTION;\nINSERT INTO `syncer_keystate` (`k`) VALUES ('a');\n"
            "SELECT `k` FROM t",
            "START TRANSACTION; INSERT syncer_keystate; SELECT t",
        ),
    ],
)
def test_command_kind_names_the_verb_and_table(sql, kind):
    assert command_kind(b"\x03" + sql.encode()) == kind
    assert command_kind(b"\x0e") == "ping"
