"""Progress of reconcile and backfill: a bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from syncer.ops.progress import Progress
from tests.syncer.reconcile.test_run import both, put_item


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_interval_with_total_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    progress = Progress(out, tty=False, interval=5, clock=lambda: now[0])
    for t, done in [(0, 0), (2, 200), (6, 600), (8, 800), (10, 1000), (11, 1000)]:
        now[0] = t
        progress.update("scan", done, 1000)
    assert out.getvalue().splitlines() == [
        "scan: 600/1,000 items (60%), 100 items/s, ETA 4s",  # the first after 5 s
        "scan: 1,000/1,000 items (100%), 100 items/s, done in 10s",  # the end, once
    ]


def test_resumed_work_counts_its_rate_from_where_it_started():
    now = [0.0]
    out = io.StringIO()
    progress = Progress(out, tty=False, interval=1, approximate=lambda p: True,
                        clock=lambda: now[0])  # fmt: skip
    progress.update("load", 5000, 10000)  # resumed at half
    now[0] = 10
    progress.update("load", 6000, 10000)
    assert out.getvalue() == "load: 6,000/~10,000 items (60%), 100 items/s, ETA 40s\n"


def test_a_terminal_gets_a_bar_never_styled_as_an_error():
    out = Terminal()
    progress = Progress(out)
    progress.update("scan", 50, 100)
    progress.update("scan", 100, 100)
    progress.close()
    text = out.getvalue()
    assert "scan" in text and "━" in text and "100/100" in text
    assert "\x1b[31" not in text and "\x1b[91" not in text  # no red


@pytest.fixture
def _no_settle(settings):
    settings.RECONCILE_SETTLE_SECONDS = 0.0


def test_reconcile_progress_in_a_log_is_plain_lines(db, aws, _no_settle):
    both("Brown#Alton", "Alton", "Brown")
    put_item("Batali#Mario", "Mario", "Batali")
    err = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("reconcile", "--buckets", "3", stdout=io.StringIO(), stderr=err)
    lines = err.getvalue().splitlines()
    assert "scan: 2/~2 items (100%)" in lines[0] and "items/s, done in" in lines[0]
    assert lines[1].startswith("compare: 3/3 buckets (100%)")
    assert "\x1b[" not in err.getvalue()
    err = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("reconcile", "-v", "0", stdout=io.StringIO(), stderr=err)
    assert err.getvalue() == ""
