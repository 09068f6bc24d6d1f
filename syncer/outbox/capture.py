"""Capture of every committed write to a mapped legacy table, whoever makes it.

Legacy databases have writers that never pass through Django (batch jobs, the old legacy
function, a person at a SQL prompt). Triggers on the mapped table (AFTER INSERT, UPDATE,
DELETE) write the outbox entry in the same transaction as the change, so a committed write
always has its entry and a rolled-back one has none. Triggers, not binlog CDC: they work
alike on MySQL 8.0 / Aurora MySQL 3 and MariaDB, need no replication privileges nor
row-format binlog (which Aurora gives only through cluster parameters), no extra process
that could fall behind or lose its position, and they run inside the writer's transaction.

Session variables tell the trigger who writes (the trigger reads them, nothing else does):

- `@backsync_sync = 1`: the sync's own writes (apply, resync, key assignment, backfill);
  the trigger records nothing, so no echo reaches the outbox. `sync_writes_mark()` sets it
  once per database connection and remembers it, so it costs the apply no statement per
  message after a connection's first.
- `@backsync_sync = 0`: Django's legacy services, inside `legacy_write()`; they also set
  `@backsync_seen` (the item version the editor saw) and enqueue the publish on commit.
- NULL (any other connection): a foreign writer. The entry's base version is the one MySQL
  last synced for the key; it is due at once, so the next outbox sweep publishes it.

The triggers are created by migrations (`CaptureTriggers`) from each app's mapping, so a
second mapped table gets them too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, transaction
from django.db.migrations.operations.base import Operation

from syncer.registry import Mapping, registry
from syncer.store.marks import MARKED_ATTR, SYNC_VAR, is_mysql

SEEN_VAR = "@backsync_seen"
ENTRY_VAR = "@backsync_outbox_id"
EVENTS = (("INSERT", "ai"), ("UPDATE", "au"), ("DELETE", "ad"))


@dataclass
class LegacyWriteCapture:
    entry_id: int | None = None  # the outbox entry the trigger wrote (last one)


@contextmanager
def legacy_write(
    *, seen_version: int | None = None, using: str = DEFAULT_DB_ALIAS
) -> Iterator[LegacyWriteCapture]:
    """Django's own legacy writes: the trigger records them as it records any SQL writer's,
    with `seen_version` (the item version the editor saw) as the edit's base when it is
    older than the one MySQL mirrors. The publish is enqueued when the transaction commits.
    Must run inside that transaction."""
    from syncer.outbox.record import outbox_enqueue

    conn = connections[using]
    if not conn.in_atomic_block:
        raise RuntimeError("legacy_write must run inside the transaction of the write")
    capture = LegacyWriteCapture()
    if not is_mysql(conn):
        yield capture
        return
    conn.ensure_connection()
    was_marked = getattr(conn, MARKED_ATTR, None) is conn.connection
    with conn.cursor() as cur:
        cur.execute(
            f"SET {SYNC_VAR} = 0, {SEEN_VAR} = %s, {ENTRY_VAR} = NULL",
            [None if seen_version is None else int(seen_version)],
        )
    try:
        yield capture
        with conn.cursor() as cur:
            cur.execute(f"SELECT {ENTRY_VAR}")
            (entry_id,) = cur.fetchone()
        if entry_id is not None:
            capture.entry_id = int(entry_id)
            transaction.on_commit(lambda: outbox_enqueue(entry_id=capture.entry_id), using=using)
    finally:
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET {SYNC_VAR} = {'1' if was_marked else 'NULL'}, {SEEN_VAR} = NULL")
        except DatabaseError:
            # The connection is unusable: it will be closed, and its variables with it.
            setattr(conn, MARKED_ATTR, None)


# --- the triggers ----------------------------------------------------------------------


def trigger_names(table: str) -> list[str]:
    """`backsync_<table>_ai|au|ad` (MySQL identifiers are at most 64 characters)."""
    base = f"backsync_{table}"
    if len(base) > 60:
        base = f"backsync_{table[:40]}_{hashlib.sha1(table.encode()).hexdigest()[:8]}"
    return [f"{base}_{suffix}" for _, suffix in EVENTS]


def _json_value(row: str, column: str, internal_type: str) -> str:
    ref = f"{row}.{column}"
    if internal_type == "BooleanField":
        # JSON true/false on both engines (a plain column would be the number 0/1).
        return f"IF({ref} IS NULL, NULL, JSON_EXTRACT(IF({ref}, 'true', 'false'), '$'))"
    return ref


def triggers_sql(*, mapping: Mapping, model=None, outbox=None, keystate=None) -> list[str]:
    """The CREATE TRIGGER statements for `mapping` (one statement each, no DELIMITER: the
    client sends each whole). Models default to the live ones; migrations pass theirs."""
    from syncer.models import KeyState, OutboxEntry

    model = model or mapping.get_model()
    outbox = outbox or OutboxEntry
    keystate = keystate or KeyState
    qn = connections[DEFAULT_DB_ALIAS].ops.quote_name
    meta = model._meta
    table = meta.db_table
    pk = qn(meta.pk.column)
    key = qn(meta.get_field(mapping.key_field).column)
    fields = [meta.get_field(fm.field) for fm in mapping.fields]
    name = mapping.name.replace("'", "''")

    def col(model_, field_name: str) -> str:
        return qn(model_._meta.get_field(field_name).column)

    entry_cols = ", ".join(
        col(outbox, f)
        for f in (
            "mapping",
            "object_pk",
            "key",
            "op",
            "values",
            "base_version",
            "status",
            "attempts",
            "next_attempt_at",
            "last_error",
            "created_at",
        )
    )

    def body(row: str, op: str) -> str:
        values = ", ".join(
            f"'{fm.attribute}', {_json_value(row, qn(f.column), f.get_internal_type())}"
            for fm, f in zip(mapping.fields, fields, strict=True)
        )
        state = qn(keystate._meta.db_table)
        base = (
            f"SET v_base = (SELECT {col(keystate, 'item_version')} FROM {state} "
            f"WHERE {col(keystate, 'mapping')} = '{name}' AND {col(keystate, 'key')} = {row}.{key} "
            f"AND {col(keystate, 'deleted')} = 0); "
            # The version the editor saw, when older than the one MySQL mirrors.
            f"IF {SEEN_VAR} IS NOT NULL THEN "
            f"SET v_base = IF(v_base IS NULL, {SEEN_VAR}, LEAST(v_base, {SEEN_VAR})); END IF; "
        )
        return (
            "DECLARE v_base BIGINT; "
            f"{base}"
            f"INSERT INTO {qn(outbox._meta.db_table)} ({entry_cols}) VALUES ("
            f"'{name}', CAST({row}.{pk} AS CHAR), IFNULL({row}.{key}, ''), '{op}', "
            f"JSON_OBJECT({values}), v_base, 'pending', 0, "
            # A foreign writer's entry is due at once (no task was enqueued for it).
            f"IF({SYNC_VAR} IS NULL, UTC_TIMESTAMP(6), NULL), '', UTC_TIMESTAMP(6)); "
            f"SET {ENTRY_VAR} = LAST_INSERT_ID(); "
        )

    skip_sync = f"IF {SYNC_VAR} IS NULL OR {SYNC_VAR} <> 1 THEN "
    # Byte comparison: a case- or trailing-space-only edit is a change (the columns'
    # collation would call it equal).
    changed = " OR ".join(
        f"NOT (CAST(OLD.{c} AS BINARY) <=> CAST(NEW.{c} AS BINARY))"
        for c in [key, *(qn(f.column) for f in fields)]
    )
    ai, au, ad = trigger_names(table)
    on = f"ON {qn(table)} FOR EACH ROW"
    return [
        f"CREATE TRIGGER {qn(ai)} AFTER INSERT {on} BEGIN {skip_sync}"
        f"BEGIN {body('NEW', 'upsert')}END; END IF; END",
        f"CREATE TRIGGER {qn(au)} AFTER UPDATE {on} BEGIN {skip_sync}IF {changed} THEN "
        f"BEGIN {body('NEW', 'upsert')}END; END IF; END IF; END",
        f"CREATE TRIGGER {qn(ad)} AFTER DELETE {on} BEGIN {skip_sync}"
        f"BEGIN {body('OLD', 'delete')}END; END IF; END",
    ]


def triggers_drop_sql(*, table: str) -> list[str]:
    qn = connections[DEFAULT_DB_ALIAS].ops.quote_name
    return [f"DROP TRIGGER IF EXISTS {qn(t)}" for t in trigger_names(table)]


def triggers_install(*, mapping: Mapping, using: str = DEFAULT_DB_ALIAS, **models) -> None:
    """Drop and create the mapping's capture triggers (MySQL has no CREATE OR REPLACE
    TRIGGER). Creating a trigger with binary logging on needs log_bin_trust_function_creators
    (Aurora: the cluster parameter group) unless the user has SUPER."""
    conn = connections[using]
    if not is_mysql(conn):
        return
    model = models.get("model") or mapping.get_model()
    with conn.cursor() as cur:
        for sql in triggers_drop_sql(table=model._meta.db_table):
            cur.execute(sql)
        for sql in triggers_sql(mapping=mapping, **{"model": model, **models}):
            cur.execute(sql)


def triggers_remove(*, table: str, using: str = DEFAULT_DB_ALIAS) -> None:
    conn = connections[using]
    if not is_mysql(conn):
        return
    with conn.cursor() as cur:
        for sql in triggers_drop_sql(table=table):
            cur.execute(sql)


def triggers_present(*, table: str, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """The capture triggers that exist on `table`."""
    conn = connections[using]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = %s",
            [table],
        )
        found = {r[0] for r in cur.fetchall()}
    return [t for t in trigger_names(table) if t in found]


class CaptureTriggers(Operation):
    """Migration operation: (re)create the capture triggers of a mapping, from the migration
    state's models. Run it again in a later migration when the mapping's fields change.

    `mapping` is a registered mapping's name or a Mapping (for apps that register theirs
    only at times, like the tests' second mapping)."""

    reversible = True
    reduces_to_sql = True

    def __init__(self, mapping: str | Mapping):
        self.mapping = mapping

    def _mapping(self) -> Mapping:
        return registry.get(self.mapping) if isinstance(self.mapping, str) else self.mapping

    def deconstruct(self):
        return self.__class__.__qualname__, [], {"mapping": self.mapping}

    def state_forwards(self, app_label, state) -> None:
        pass

    def _models(self, state_apps, mapping: Mapping) -> dict:
        return {
            "model": state_apps.get_model(mapping.model),
            "outbox": state_apps.get_model("syncer", "OutboxEntry"),
            "keystate": state_apps.get_model("syncer", "KeyState"),
        }

    def database_forwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if not is_mysql(schema_editor.connection):
            return
        mapping = self._mapping()
        models = self._models(to_state.apps, mapping)
        for sql in triggers_drop_sql(table=models["model"]._meta.db_table):
            schema_editor.execute(sql, params=None)
        for sql in triggers_sql(mapping=mapping, **models):
            schema_editor.execute(sql, params=None)

    def database_backwards(self, app_label, schema_editor, from_state, to_state) -> None:
        if not is_mysql(schema_editor.connection):
            return
        model = from_state.apps.get_model(self._mapping().model)
        for sql in triggers_drop_sql(table=model._meta.db_table):
            schema_editor.execute(sql, params=None)

    def describe(self) -> str:
        name = self.mapping if isinstance(self.mapping, str) else self.mapping.name
        return f"Create the capture triggers of mapping {name}"
