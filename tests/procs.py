"""Helpers for tests that run real processes (worker, relay, manage.py) and wait on them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll until predicate() is truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")


class ManagedProcess:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log_dir: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> ManagedProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        log.write(f"\n===== start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (the worker's pool children too): a crash, not a stop."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> int | None:
        if not self.running:
            return self.proc.returncode if self.proc else None
        self.signal_group(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_argv(*, schedule: Path) -> list[str]:
    """A celery worker on every queue with beat (the outbox sweep), as `make up` runs it."""
    from django.conf import settings

    return [
        str(VENV_BIN / "celery"),
        "-A",
        "config",
        "worker",
        "-Q",
        f"{settings.SYNC_QUEUE_NAME},{settings.OUTBOX_QUEUE_NAME},{settings.RECONCILE_QUEUE_NAME}",
        "--concurrency",
        "2",
        "--without-gossip",
        "--without-mingle",
        "--beat",
        "--schedule",
        str(schedule),
        "-l",
        "info",
    ]


def relay_argv(*extra: str) -> list[str]:
    return [sys.executable, "manage.py", "relay_stream", "--batching-window", "0.2", *extra]
