"""The mark on a MySQL connection that says "these are the sync's own writes".

The capture triggers (syncer.outbox.capture) record every write to a mapped table in the
outbox, except the sync's own (apply, resync, key assignment, backfill): those would come
back as an echo. The writers in this package mark their connection before they write; the
mark is a session variable (`@backsync_sync = 1`) that the triggers read.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections

SYNC_VAR = "@backsync_sync"
# The raw DB-API connection a wrapper last marked as a sync connection (a reconnect gets a
# new raw connection, whose session variables are empty again).
MARKED_ATTR = "_backsync_sync_marked"


def is_mysql(conn) -> bool:
    return conn.vendor == "mysql"


def sync_writes_mark(*, using: str = DEFAULT_DB_ALIAS, conn=None) -> None:
    """Mark this connection's writes as the sync's own: the capture triggers skip them.

    One `SET` the first time on a database connection, nothing afterwards: the mark is a
    session variable, kept until the connection closes. `legacy_write()` lifts it for its
    own write and puts it back. `conn`: a connection wrapper instead of an alias."""
    conn = conn or connections[using]
    if not is_mysql(conn):
        return
    conn.ensure_connection()
    raw = conn.connection
    if getattr(conn, MARKED_ATTR, None) is raw:
        return
    with conn.cursor() as cur:
        cur.execute(f"SET {SYNC_VAR} = 1")
    setattr(conn, MARKED_ATTR, raw)


def sync_writes_unmark(*, using: str = DEFAULT_DB_ALIAS) -> None:
    """Lift the mark: this connection's writes are captured again (scripts, tests)."""
    conn = connections[using]
    if not is_mysql(conn):
        return
    with conn.cursor() as cur:
        cur.execute(f"SET {SYNC_VAR} = NULL")
    setattr(conn, MARKED_ATTR, None)
