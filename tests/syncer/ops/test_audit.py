"""The audit trail of repairing commands (admin actions: tests/test_roles.py)."""

from __future__ import annotations

import contextlib
import io

import pytest
from django.core.management import CommandError, call_command

from syncer.models import AuditEntry
from syncer.ops.audit import audited
from syncer.reconcile.report import ReconcileError
from tests.syncer.reconcile.test_run import put_item, seed_drift

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_settle(settings):
    # Nothing writes while these run: no need to wait for changes in flight (issue 19).
    settings.RECONCILE_SETTLE_SECONDS = 0


def reconcile(*args: str) -> None:
    with contextlib.suppress(SystemExit):  # exit status 1: drift left
        call_command("reconcile", *args, "--buckets", "2", stdout=io.StringIO())


def test_reconcile_repair_is_recorded_with_its_outcome(aws):
    seed_drift()
    reconcile("--repair", "to-mysql")
    entry = AuditEntry.objects.get()
    assert (entry.via, entry.action, entry.target) == ("command", "repair to-mysql", "chef")
    assert (entry.count, entry.outcome) == (5, "ok")
    assert "repaired=5" in entry.detail and entry.user is None
    # Who: the OS user at the host, and the command.
    assert "@" in entry.actor and entry.actor.endswith("(manage.py reconcile)")


def test_reports_and_dry_runs_are_not_operator_actions(aws):
    seed_drift()
    reconcile()
    reconcile("--repair", "to-dynamo", "--dry-run")
    assert not AuditEntry.objects.exists()


def test_a_failed_repair_is_recorded_as_failed(aws, monkeypatch):
    from syncer.management.commands import reconcile as command

    def broken(**kwargs):
        raise ReconcileError("scan segment 1 failed: boom")

    monkeypatch.setattr(command, "reconcile_run", broken)
    with pytest.raises(CommandError, match="boom"):
        reconcile("--repair", "to-dynamo")
    entry = AuditEntry.objects.get()
    assert entry.outcome == "failed" and "boom" in entry.detail


def test_backfill_is_recorded(aws):
    for i in range(3):
        put_item(f"K#{i}", "F", str(i))
    call_command("backfill", "--to", "mysql", stdout=io.StringIO())
    call_command("backfill", "--to", "mysql", "--restart", "--dry-run", stdout=io.StringIO())
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.target, entry.count, entry.outcome) == (
        "backfill to mysql",
        "chef",
        3,
        "ok",
    )


def test_audited_block_records_partial_and_failed_outcomes():
    with audited(action="replay", target="t", via="admin", actor="a", object_ids=[1, 2]) as r:
        r.failed = 1
    with pytest.raises(RuntimeError), audited(action="replay", target="t", via="admin", actor="a"):
        raise RuntimeError("db gone")
    partial, failed = AuditEntry.objects.order_by("pk")
    assert (partial.outcome, partial.count, partial.object_ids) == ("partial", 2, "1,2")
    assert failed.outcome == "failed" and "RuntimeError: db gone" in failed.detail


def test_admin_reconcile_repair_task_records_the_user(aws):
    from syncer.reconcile.tasks import reconcile_repair
    from tests.factories import user_with_roles

    operator = user_with_roles(username="op", is_staff=True)
    seed_drift()
    assert (
        reconcile_repair.run(mapping_names=["chef"], direction="to-mysql", user_id=operator.pk) == 0
    )
    entry = AuditEntry.objects.get()
    assert (entry.user, entry.actor, entry.via) == (operator, "op", "admin")
    assert (entry.action, entry.target, entry.count, entry.outcome) == (
        "repair to-mysql",
        "chef",
        5,
        "ok",
    )


def test_admin_reconcile_repair_task_failure_is_recorded(aws, monkeypatch):
    from syncer.reconcile import run as reconcile_module
    from syncer.reconcile.tasks import reconcile_repair

    def broken(**kwargs):
        raise ReconcileError("DynamoDB unreachable")

    monkeypatch.setattr(reconcile_module, "reconcile_run", broken)
    with pytest.raises(ReconcileError):
        reconcile_repair.run(mapping_names=["chef"], direction="to-dynamo", user_id=None)
    entry = AuditEntry.objects.get()
    assert entry.outcome == "failed" and "DynamoDB unreachable" in entry.detail
