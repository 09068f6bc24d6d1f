"""Read-side queries over the sync's bookkeeping."""

from __future__ import annotations

from typing import Any

from django.db import connection, models
from django.db.models import Exists, OuterRef, Subquery
from django.db.models.functions import Cast, Collate

from syncer.models import KEY_COLLATION, Conflict, KeyState, OutboxEntry
from syncer.registry import Mapping
from syncer.store import keystate


class SyncState(models.TextChoices):
    IN_SYNC = "in_sync", "in sync"
    PENDING = "pending", "pending publish"
    CONFLICT = "conflict", "conflict"
    FAILED = "failed", "failed"
    UNKEYED = "unkeyed", "no key yet"


def sync_annotations(*, mapping: Mapping) -> dict[str, models.Expression]:
    """Annotations for a queryset of the mapped model: item version and sync flags."""
    # Same collation on both sides, whatever the connection's default is.
    pk_text = Collate(Cast(OuterRef("pk"), models.CharField(max_length=64)), KEY_COLLATION)
    entries = OutboxEntry.objects.filter(mapping=mapping.name, object_pk=pk_text)
    return {
        "sync_version": Subquery(
            KeyState.objects.filter(mapping=mapping.name, key=OuterRef(mapping.key_field)).values(
                "item_version"
            )[:1]
        ),
        "sync_pending": Exists(entries.filter(status=OutboxEntry.Status.PENDING)),
        "sync_failed": Exists(entries.filter(status=OutboxEntry.Status.FAILED)),
        "sync_conflict": Exists(
            Conflict.objects.filter(mapping=mapping.name, object_pk=pk_text, resolved=False)
        ),
    }


def sync_state_of(obj: models.Model, *, mapping: Mapping) -> SyncState:
    """The state of one annotated object (see sync_annotations)."""
    if getattr(obj, "sync_failed", False):
        return SyncState.FAILED
    if getattr(obj, "sync_conflict", False):
        return SyncState.CONFLICT
    if getattr(obj, "sync_pending", False):
        return SyncState.PENDING
    if not getattr(obj, mapping.key_field):
        return SyncState.UNKEYED
    return SyncState.IN_SYNC


def key_state_get(*, mapping: Mapping, key: str | None) -> KeyState | None:
    if not key:
        return None
    return keystate.key_state_get(mapping=mapping, key=key)


def _server_info(version_text: str) -> dict[str, str]:
    # VERSION() is e.g. "10.11.6-MariaDB-0+deb12u1" or "8.0.39" (Aurora: "8.0.mysql_aurora...").
    engine = "MariaDB" if "mariadb" in version_text.lower() else "MySQL"
    return {"engine": engine, "version": version_text.split("-")[0], "server": version_text}


def database_server_info(*, settings_dict: dict[str, Any] | None = None) -> dict[str, str]:
    """Engine ("MySQL" or "MariaDB") and version of the database server.

    With `settings_dict`, asks the server over a connection of its own that names no
    database (for the test run's header, before the test database exists)."""
    if settings_dict is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            return _server_info(cursor.fetchone()[0])
    import MySQLdb

    raw = MySQLdb.connect(
        host=settings_dict.get("HOST") or "127.0.0.1",
        port=int(settings_dict.get("PORT") or 3306),
        user=settings_dict.get("USER") or "root",
        password=settings_dict.get("PASSWORD") or "",
        connect_timeout=5,
    )
    try:
        cursor = raw.cursor()
        cursor.execute("SELECT VERSION()")
        return _server_info(cursor.fetchone()[0])
    finally:
        raw.close()
