"""The audit trail of operator actions: who did what, when, to what, and how it ended.

Admin actions and repairing commands wrap their work in `audited(...)`; the entry is
written when the block ends, also when it raises (outcome failed, then the error goes on).
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.utils import timezone

from syncer.models import AuditEntry

OBJECT_IDS_MAX = 2000  # characters of the acted-on ids kept per entry


@dataclass
class AuditResult:
    """Filled in by the audited block."""

    count: int = 0
    failed: int = 0
    detail: str = ""

    @property
    def outcome(self) -> str:
        if not self.failed:
            return AuditEntry.Outcome.OK
        return AuditEntry.Outcome.PARTIAL if self.failed < self.count else AuditEntry.Outcome.FAILED


def command_actor(*, command: str) -> str:
    """Who runs a command: there is no Django user, so the OS user and host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        user = "?"
    return f"{user}@{socket.gethostname()} (manage.py {command})"[:255]


def _ids_text(object_ids: Iterable) -> str:
    text = ",".join(str(i) for i in object_ids)
    return text if len(text) <= OBJECT_IDS_MAX else text[: OBJECT_IDS_MAX - 3] + "..."


def audit_record(
    *,
    action: str,
    target: str,
    via: str,
    outcome: str,
    user=None,
    actor: str = "",
    object_ids: Iterable = (),
    count: int = 0,
    detail: str = "",
) -> AuditEntry:
    if user is not None and not actor:
        actor = user.get_username()
    return AuditEntry.objects.create(
        at=timezone.now(),
        user=user,
        actor=actor[:255],
        via=via,
        action=action,
        target=target[:255],
        object_ids=_ids_text(object_ids),
        count=count,
        outcome=outcome,
        detail=detail,
    )


@contextmanager
def audited(
    *,
    action: str,
    target: str,
    via: str,
    user=None,
    actor: str = "",
    object_ids: Iterable = (),
) -> Iterator[AuditResult]:
    object_ids = list(object_ids)
    result = AuditResult(count=len(object_ids))
    common = {"action": action, "target": target, "via": via, "user": user, "actor": actor}
    try:
        yield result
    except BaseException as exc:
        audit_record(
            **common,
            object_ids=object_ids,
            count=result.count,
            outcome=AuditEntry.Outcome.FAILED,
            detail=f"{result.detail}\n{type(exc).__name__}: {exc}".strip()[:2000],
        )
        raise
    audit_record(
        **common,
        object_ids=object_ids,
        count=result.count,
        outcome=result.outcome,
        detail=result.detail,
    )


@contextmanager
def admin_audited(request, *, action: str, queryset) -> Iterator[AuditResult]:
    """An admin action on the selected objects, recorded with the signed-in user."""
    with audited(
        action=action,
        target=queryset.model._meta.label,
        via=AuditEntry.Via.ADMIN,
        user=request.user,
        object_ids=queryset.values_list("pk", flat=True),
    ) as result:
        yield result
