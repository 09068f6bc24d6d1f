"""The sync's own bookkeeping. The mirrored tables themselves are never given extra columns
beyond their key; everything the sync needs to know lives here."""

import json
import struct
import zlib
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import lookups
from django.utils import timezone

KEY_COLLATION = "utf8mb4_bin"  # DynamoDB keys compare byte for byte
# DynamoDB stream sequence numbers are decimal strings of up to 40 digits; they are
# stored and compared as integers, never as strings.
SEQUENCE_DIGITS = 40


def SequenceField(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    return models.DecimalField(max_digits=SEQUENCE_DIGITS, decimal_places=0, **kwargs)


def compress_json(value: Any) -> bytes:
    """`value` as compact JSON text (ASCII, as json.dumps writes it) in MySQL's COMPRESS()
    format: the text's length (4 bytes, little-endian), then a zlib stream (level 1)."""
    text = json.dumps(value, separators=(",", ":")).encode()
    return struct.pack("<I", len(text)) + zlib.compress(text, 1)


def uncompress_json(data: bytes | memoryview) -> Any:
    """The value of JSON text in MySQL's COMPRESS() format (as UNCOMPRESS() reads it), or
    of plain JSON text: a worker still running the code before migration 0010 writes its
    log row's entries uncompressed into the renamed column during a rolling deploy."""
    data = bytes(data)
    if not data:  # COMPRESS('') is ''
        raise ValueError("no JSON text: empty COMPRESS() value")
    try:
        # A decompressor object ignores what follows the stream: MySQL's COMPRESS()
        # appends a '.' when the stream ends with a space.
        text = zlib.decompressobj().decompress(data[4:])
        if len(text) != struct.unpack("<I", data[:4])[0]:
            raise ValueError("COMPRESS() value's length does not match its text")
    except (zlib.error, struct.error, ValueError) as exc:
        try:
            return json.loads(data)
        except ValueError:
            raise ValueError(f"neither COMPRESS() nor JSON text: {exc}") from exc
    return json.loads(text)


class CompressedJSONField(models.BinaryField):
    """A JSON value stored as a blob in MySQL's COMPRESS() format (`compress_json`), so SQL
    still reads it with UNCOMPRESS() on MariaDB and MySQL 8. The client compresses: the
    server does no work, and no JSON check or off-page text for a large value.

    `<field>__text` is its JSON text in SQL (binary collation, as a JSON column's), and
    `<field>__text__icontains` ignores case as a JSON column's icontains does."""

    description = "JSON (compressed)"

    def get_default(self) -> Any:
        # BinaryField's would give b"", which is no JSON.
        if not self.has_default():
            return None
        return self.default() if callable(self.default) else self.default

    def get_prep_value(self, value: Any) -> bytes | None:
        return None if value is None else compress_json(value)

    def get_db_prep_value(self, value: Any, connection, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        return None if value is None else connection.Database.Binary(value)

    def from_db_value(self, value: bytes | memoryview | None, expression, connection) -> Any:
        return None if value is None else uncompress_json(value)

    def to_python(self, value: Any) -> Any:
        # Serialized (value_to_string) as JSON text, not as BinaryField's base64.
        return json.loads(value) if isinstance(value, str) else value

    def value_to_string(self, obj: models.Model) -> str:
        return json.dumps(self.value_from_object(obj), separators=(",", ":"))


@CompressedJSONField.register_lookup
class UncompressedText(models.Transform):
    """A CompressedJSONField's JSON text (utf8mb4, binary collation) in SQL."""

    lookup_name = "text"
    output_field = models.TextField()
    template = "CONVERT(UNCOMPRESS(%(expressions)s) USING utf8mb4) COLLATE utf8mb4_bin"


@UncompressedText.register_lookup
class UncompressedTextIContains(lookups.IContains):
    """icontains on the JSON text: its collation is binary, so both sides go through
    LOWER() (as Django does for a JSON column on MySQL)."""

    def process_lhs(self, compiler, connection, lhs=None):
        sql, params = super().process_lhs(compiler, connection, lhs)
        return f"LOWER({sql})", params

    def process_rhs(self, compiler, connection):
        sql, params = super().process_rhs(compiler, connection)
        return f"LOWER({sql})", params


class KeyState(models.Model):
    """Per mapped key: the newest change applied, and a tombstone once it was removed."""

    mapping = models.CharField(max_length=64)
    key = models.CharField(max_length=255, db_collation=KEY_COLLATION)
    sequence = SequenceField(help_text="Stream sequence number of the last applied change.")
    deleted = models.BooleanField(default=False, help_text="Tombstone: the item was removed.")
    item_version = models.BigIntegerField(
        null=True, blank=True, help_text="DynamoDB version attribute of the applied image."
    )
    source_time = models.DateTimeField(
        null=True, blank=True, help_text="When the change happened in DynamoDB."
    )
    applied_at = models.DateTimeField()
    # Written by the apply's guarded upsert (`previous_sequence = sequence` before the
    # sequence moves) and read back by a locking read of the rows that upsert locked, in the
    # same round trip: it tells which changes won (portable to MySQL 8.0).
    previous_sequence = SequenceField(
        null=True,
        blank=True,
        help_text="Sequence number before the latest apply statement (apply bookkeeping).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mapping", "key"], name="syncer_keystate_unique_key")
        ]
        verbose_name = "key state"

    def __str__(self) -> str:
        return f"{self.mapping}:{self.key}@{self.sequence}"


class AppliedBatch(models.Model):
    """One row per batch the apply service processed (one message's changes of one mapping),
    written in the batch's own transaction: the source of lag, throughput and the record of
    which change landed.

    One row per batch, not one per change (issue 17): a row per change cost an InnoDB row
    and an index entry per change on the worker's hot path. The per-change record is kept
    whole in `entries`, so what was logged can still be checked change by change (the fault
    tests prove no loss and no double application from it)."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "applied"
        STALE = "stale", "stale (older than what was applied)"

    # The order of the values in each of `entries`' lists.
    ENTRY_FIELDS = ("event_id", "key", "sequence", "event", "outcome", "lag")

    mapping = models.CharField(max_length=64)
    # The only secondary index: every reader (dashboard, CloudWatch, retention) filters by
    # time.
    applied_at = models.DateTimeField(db_index=True)
    applied = models.PositiveIntegerField(help_text="Changes applied.")
    stale = models.PositiveIntegerField(help_text="Changes older than what was applied.")
    lag_max = models.FloatField(
        null=True, blank=True, help_text="Largest lag (s) of the applied changes."
    )
    # {"<lag in ms>": count} of the applied changes with a source time: the dashboard's and
    # CloudWatch's percentiles merge these without reading `entries`.
    lags = models.JSONField(default=dict, blank=True)
    # One list per change: [event_id, key, sequence (text), event, outcome, lag (s) or null],
    # compressed: ~100 changes of JSON a row were off-page text and a JSON check per batch.
    entries = CompressedJSONField(default=list, blank=True)

    class Meta:
        verbose_name = "applied batch"
        verbose_name_plural = "applied batches"

    def __str__(self) -> str:
        return f"{self.mapping} @ {self.applied_at:%Y-%m-%d %H:%M:%S}: {self.applied} applied"

    @property
    def changes(self) -> int:
        return self.applied + self.stale

    def entry_dicts(self) -> list[dict]:
        """`entries` as dicts keyed by ENTRY_FIELDS."""
        return [dict(zip(self.ENTRY_FIELDS, entry, strict=True)) for entry in self.entries]


class FailedChange(models.Model):
    """A change that could not be applied, kept with its payload and error until an operator
    replays or discards it (the on-failure destination of the pipeline)."""

    class Source(models.TextChoices):
        APPLY = "apply", "apply (worker)"
        STREAM = "stream", "stream (relay / handler)"

    class Status(models.TextChoices):
        FAILED = "failed", "failed"
        REPLAYED = "replayed", "replayed"
        DISCARDED = "discarded", "discarded"

    source = models.CharField(max_length=16, choices=Source.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.FAILED, db_index=True
    )
    mapping = models.CharField(max_length=64, blank=True)
    key = models.CharField(max_length=255, blank=True, db_collation=KEY_COLLATION)
    event_id = models.CharField(max_length=128, unique=True)
    event_name = models.CharField(max_length=16, blank=True)
    sequence = SequenceField(null=True, blank=True)
    payload = models.JSONField()
    error = models.TextField()
    attempts = models.PositiveIntegerField(default=1)
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_failed_at"]
        # Operator actions, granted through the "sync operators" group (chefs/roles.py).
        permissions = [
            ("replay_failedchange", "Can replay failed changes"),
            ("discard_failedchange", "Can discard failed changes"),
        ]

    def __str__(self) -> str:
        return f"{self.event_name} {self.mapping}:{self.key} ({self.status})"


class ShardCheckpoint(models.Model):
    """The relay's durable position in one stream shard (what Lambda's mapping keeps)."""

    stream_arn = models.CharField(max_length=255)
    shard_id = models.CharField(max_length=128)
    parent_shard_id = models.CharField(max_length=128, blank=True)
    sequence_number = models.CharField(
        max_length=SEQUENCE_DIGITS, blank=True, help_text="Last record handed on (processed)."
    )
    finished = models.BooleanField(default=False, help_text="Closed shard read to its end.")
    records_total = models.BigIntegerField(default=0)
    last_batch_size = models.IntegerField(default=0)
    last_batch_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stream_arn", "shard_id"], name="syncer_shardcheckpoint_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.shard_id}@{self.sequence_number or 'start'}"


class OutboxEntry(models.Model):
    """A legacy-side write waiting to be published to DynamoDB. Written in the same
    transaction as the row it describes, so a committed write is never lost."""

    class Op(models.TextChoices):
        UPSERT = "upsert", "create or update"
        DELETE = "delete", "delete"

    class Status(models.TextChoices):
        PENDING = "pending", "pending publish"
        PUBLISHED = "published", "published"
        CONFLICT = "conflict", "conflict (DynamoDB kept)"
        FAILED = "failed", "failed (attempts exhausted)"

    mapping = models.CharField(max_length=64)
    object_pk = models.CharField(
        max_length=64, db_collation=KEY_COLLATION, help_text="Primary key of the legacy row."
    )
    key = models.CharField(max_length=255, blank=True, db_collation=KEY_COLLATION)
    op = models.CharField(max_length=16, choices=Op.choices)
    values = models.JSONField(help_text="DynamoDB attribute values the edit wrote.")
    base_version = models.BigIntegerField(
        null=True, blank=True, help_text="Item version the legacy edit was based on."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    published_version = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "outbox entries"
        permissions = [("retry_outboxentry", "Can retry failed outbox entries")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["mapping", "object_pk", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.op} {self.mapping}#{self.object_pk} ({self.status})"


class Conflict(models.Model):
    """A legacy edit that DynamoDB refused because the item changed after the version the
    edit was based on (or its key belonged to another item). DynamoDB's state was kept and
    MySQL brought back to it; both sides' values are kept here."""

    class Kind(models.TextChoices):
        STALE_VERSION = "stale_version", "item changed in DynamoDB since the edit"
        KEY_COLLISION = "key_collision", "key already used by another item"

    mapping = models.CharField(max_length=64)
    key = models.CharField(max_length=255, blank=True, db_collation=KEY_COLLATION)
    object_pk = models.CharField(max_length=64, db_collation=KEY_COLLATION)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    outbox_entry = models.ForeignKey(OutboxEntry, on_delete=models.SET_NULL, null=True)
    legacy_op = models.CharField(max_length=16)
    legacy_values = models.JSONField()
    legacy_time = models.DateTimeField()
    legacy_base_version = models.BigIntegerField(null=True, blank=True)
    dynamo_values = models.JSONField(null=True, blank=True, help_text="null: item absent")
    dynamo_version = models.BigIntegerField(null=True, blank=True)
    dynamo_time = models.DateTimeField(null=True, blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)
    resolved = models.BooleanField(default=False)

    class Meta:
        ordering = ["-detected_at"]
        permissions = [("review_conflict", "Can mark conflicts as reviewed")]

    def __str__(self) -> str:
        return f"{self.kind} {self.mapping}:{self.key or self.object_pk}"


class BackfillCheckpoint(models.Model):
    """How far `manage.py backfill` got for one mapping and direction, so an interrupted
    load resumes where it stopped (writes are idempotent, so a redone batch adds nothing)."""

    class Direction(models.TextChoices):
        TO_MYSQL = "mysql", "DynamoDB -> MySQL"
        TO_DYNAMO = "dynamo", "MySQL -> DynamoDB"

    mapping = models.CharField(max_length=64)
    direction = models.CharField(max_length=16, choices=Direction.choices)
    position = models.JSONField(
        null=True, blank=True, help_text="Where to continue: last primary key or scan key."
    )
    items_read = models.BigIntegerField(default=0)
    items_written = models.BigIntegerField(default=0)
    items_skipped = models.BigIntegerField(
        default=0, help_text="Not written: already current + kept + failed."
    )
    items_current = models.BigIntegerField(
        default=0, help_text="Not written: the target already holds this state or a newer one."
    )
    items_kept = models.BigIntegerField(
        default=0, help_text="Not written: the target holds other values (reconcile compares)."
    )
    items_failed = models.BigIntegerField(
        default=0, help_text="Could not be written (the mapping refused it, key taken...)."
    )
    finished = models.BooleanField(default=False)
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["mapping", "direction"], name="syncer_backfillcheckpoint_unique"
            )
        ]

    def __str__(self) -> str:
        return f"backfill {self.mapping} -> {self.direction} ({self.items_read} read)"


class ReconcileRun(models.Model):
    """One `manage.py reconcile` run; its scan and compare tasks report into ReconcileTask."""

    options = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The admin's reconcile page (/admin/sync/reconcile/) starts repairing runs.
        permissions = [("repair_reconcilerun", "Can run reconcile repairs from the admin")]

    def __str__(self) -> str:
        return f"reconcile run {self.pk}"


class ReconcileTask(models.Model):
    """One scan segment or compare bucket of a run, with its partial report. Celery runs
    without a result backend here, so the tasks' results are kept in this table."""

    class Phase(models.TextChoices):
        SCAN = "scan", "scan DynamoDB segment"
        COMPARE = "compare", "compare key-hash bucket"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    run = models.ForeignKey(ReconcileRun, on_delete=models.CASCADE, related_name="tasks")
    mapping = models.CharField(max_length=64)
    phase = models.CharField(max_length=16, choices=Phase.choices)
    number = models.IntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "mapping", "phase", "number"], name="syncer_reconciletask_unique"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.mapping} {self.phase} #{self.number} ({self.status})"


class ReconcileItem(models.Model):
    """The DynamoDB side of a run, spilled to disk so that no process holds a whole table:
    the compare phase reads it back one key-hash range at a time."""

    run_id = models.BigIntegerField()  # no foreign key: dropped in one fast DELETE
    mapping = models.CharField(max_length=64)
    segment = models.IntegerField(default=0, help_text="Scan segment that read the item.")
    key_hash = models.BigIntegerField(help_text="CRC32 of the key's UTF-8 bytes.")
    key = models.CharField(max_length=255, db_collation=KEY_COLLATION)
    values = models.TextField(blank=True, help_text="Mapped field values (JSON).")
    error = models.TextField(blank=True, help_text="Why the mapping refused the item.")
    version = models.BigIntegerField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["run_id", "mapping", "key_hash"])]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.mapping}:{self.key}"


class ReconcileKey(models.Model):
    """The MySQL side's keys of a run, hashed by the database. The mapped table has no
    key-hash column (and gets none), so without this every compare bucket would scan the
    whole table (and the key states) for its hash range: quadratic in the table size. One
    INSERT ... SELECT per mapping fills it; a bucket then reads its rows' primary keys, and
    the tombstones, by an index range."""

    class Source(models.TextChoices):
        ROW = "row", "MySQL row (object_pk)"
        TOMBSTONE = "tombstone", "key state tombstone (key)"

    run_id = models.BigIntegerField()  # no foreign key: dropped in one fast DELETE
    mapping = models.CharField(max_length=64)
    source = models.CharField(max_length=16, choices=Source.choices)
    key_hash = models.BigIntegerField(help_text="CRC32 of the key's UTF-8 bytes.")
    object_pk = models.CharField(max_length=64, blank=True, help_text="Rows: primary key.")
    key = models.CharField(
        max_length=255, blank=True, db_collation=KEY_COLLATION, help_text="Tombstones: key."
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["run_id", "mapping", "source", "key_hash", "object_pk"],
                name="syncer_reconcilekey_bucket",
            )
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.mapping} {self.source} {self.object_pk or self.key}"


class AuditEntry(models.Model):
    """One operator action (admin action or repairing command): who, when, what, outcome.
    Written by `syncer.ops.audit`; read-only in the admin."""

    class Via(models.TextChoices):
        ADMIN = "admin", "admin"
        COMMAND = "command", "management command"

    class Outcome(models.TextChoices):
        OK = "ok", "ok"
        PARTIAL = "partial", "partly failed"
        FAILED = "failed", "failed"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    # Kept when the user is deleted: `actor` still names who it was.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor = models.CharField(max_length=255, help_text="User name, or OS user@host for a command.")
    via = models.CharField(max_length=16, choices=Via.choices)
    action = models.CharField(max_length=64, db_index=True)
    target = models.CharField(max_length=255, help_text="Model label or mappings acted on.")
    object_ids = models.TextField(blank=True, help_text="Primary keys or keys acted on.")
    count = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"
