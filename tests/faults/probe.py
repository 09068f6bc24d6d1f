"""A probe loaded into fault-test workers (`celery worker --include tests.faults.probe`):
one line per task start and end in the file named by BACKSYNC_PROBE_FILE, so a test can
kill the worker while a batch or a publish is running and not yet finished.

Lines: `<unix time> begin <task id> <task name> <payload>` where the payload is the
comma-separated event ids of an apply batch or the outbox entry id of a publish, and
`<unix time> end <task id> <state>` (SUCCESS, RETRY, FAILURE) once the task returned, that
is after its transaction committed (or rolled back).
"""

from __future__ import annotations

import os
import time

from celery.signals import task_postrun, task_prerun

PROBE_FILE = os.environ.get("BACKSYNC_PROBE_FILE", "")


def _write(line: str) -> None:
    if not PROBE_FILE:
        return
    # One write of one line in append mode: the pool's processes do not interleave.
    with open(PROBE_FILE, "a", encoding="utf-8") as out:
        out.write(f"{time.time():.3f} {line}\n")


def _payload(name: str, args, kwargs) -> str:
    args, kwargs = list(args or ()), dict(kwargs or {})
    if name == "syncer.apply_changes":
        changes = args[0] if args else kwargs.get("changes") or []
        return ",".join(str(c.get("id")) for c in changes if isinstance(c, dict)) or "-"
    if name == "syncer.outbox_publish":
        return str(args[0] if args else kwargs.get("entry_id"))
    return "-"


@task_prerun.connect
def _begin(task_id=None, task=None, args=None, kwargs=None, **_):
    _write(f"begin {task_id} {task.name} {_payload(task.name, args, kwargs)}")


@task_postrun.connect
def _end(task_id=None, state=None, **_):
    _write(f"end {task_id} {state}")
