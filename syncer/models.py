"""The sync's own bookkeeping. The mirrored tables themselves are never given extra columns
beyond their key; everything the sync needs to know lives here."""

from django.db import models

KEY_COLLATION = "utf8mb4_bin"  # DynamoDB keys compare byte for byte
# DynamoDB stream sequence numbers are decimal strings of up to 40 digits; they are
# stored and compared as integers, never as strings.
SEQUENCE_DIGITS = 40


def SequenceField(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    return models.DecimalField(max_digits=SEQUENCE_DIGITS, decimal_places=0, **kwargs)


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

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mapping", "key"], name="syncer_keystate_unique_key")
        ]
        verbose_name = "key state"

    def __str__(self) -> str:
        return f"{self.mapping}:{self.key}@{self.sequence}"


class AppliedChange(models.Model):
    """One row per change the apply service processed: the source of lag and throughput."""

    class Outcome(models.TextChoices):
        APPLIED = "applied", "applied"
        STALE = "stale", "stale (older than what was applied)"

    mapping = models.CharField(max_length=64)
    key = models.CharField(max_length=255, db_collation=KEY_COLLATION)
    event_id = models.CharField(max_length=128, blank=True)
    event_name = models.CharField(max_length=16)
    sequence = SequenceField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    source_time = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["mapping", "key"])]

    def __str__(self) -> str:
        return f"{self.event_name} {self.mapping}:{self.key}@{self.sequence} {self.outcome}"

    @property
    def lag_seconds(self) -> float | None:
        if self.source_time is None:
            return None
        return (self.applied_at - self.source_time).total_seconds()


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
