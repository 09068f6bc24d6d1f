"""What the stack is built from: values shared with the app's settings, per-environment options.

`SyncSettings` holds the numbers that must agree with config/settings/base.py (its defaults
are the settings' defaults); `DeployOptions` the choices a deployment makes through CDK
context (deploy/README.md). `DeployOptions.validate` refuses, at synth time, a combination
that cannot work in AWS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncSettings:
    """Values shared with config/settings/base.py (same names, same defaults)."""

    table_name: str = "chef"
    table_key: str = "ChefId"
    sync_queue_name: str = "backsync-changes.fifo"
    sync_dlq_name: str = "backsync-changes-dlq.fifo"
    outbox_queue_name: str = "backsync-outbox"
    outbox_dlq_name: str = "backsync-outbox-dlq"
    reconcile_queue_name: str = "backsync-reconcile"
    reconcile_dlq_name: str = "backsync-reconcile-dlq"
    stream_failures_queue_name: str = "backsync-stream-failures"
    database_name: str = "chefdb"
    celery_task_time_limit: int = 300
    celery_retry_backoff_max: int = 300
    sqs_max_receive_count: int = 10
    # Event source mapping (stream -> handler). A large batch costs no lag (Lambda hands on
    # what the shard has; batches only fill under load, where they pack more changes into a
    # message: bench/RESULTS.md, scale_out.py). The window adds up to its own length to every
    # change's lag, and Lambda takes whole seconds: 0 keeps p99 lag under a second.
    stream_batch_size: int = 1000
    stream_batching_window_seconds: int = 0
    stream_retry_attempts: int = 5
    stream_max_record_age_hours: int = 24
    # FIFO message groups per table (SYNC_MESSAGE_GROUPS): at most this many messages are
    # in flight at once, so it caps the worker processes that can have work.
    message_groups: int = 4

    @property
    def sqs_visibility_timeout(self) -> int:
        # As in base.py: longer than a task plus its longest retry delay, so SQS never
        # hands a message to a second worker while the first is still on it.
        return self.celery_task_time_limit + self.celery_retry_backoff_max + 60


@dataclass(frozen=True)
class DeployOptions:
    """Per-environment choices, from CDK context (see deploy/README.md)."""

    # Image for the web app and worker; None builds the repository's Dockerfile at deploy
    # time (synthesis only stages the directory: no Docker needed to synthesise).
    image_uri: str | None = None
    # Image for the release task (migrate, collectstatic); defaults to image_uri. Lets a
    # deploy run the new migrations before the services switch to the new code.
    release_image_uri: str | None = None
    # Host names the web app answers to besides the load balancer's own DNS name
    # (comma-separated, e.g. the domain of the certificate).
    allowed_hosts: str = ""
    certificate_arn: str | None = None
    web_desired_count: int = 2
    # Worker tasks scale between these on the change queue's backlog.
    worker_min_count: int = 1
    worker_max_count: int = 2
    worker_concurrency: int = 2
    db_min_capacity: float = 0.5
    db_max_capacity: float = 4
    # Alarm notifications by e-mail (the SNS topic exists either way; its ARN is an output).
    alarm_email: str | None = None
    # An existing Secrets Manager secret whose value is the bearer token of /metrics
    # (METRICS_TOKEN in the web task); none: the variable is not set.
    metrics_token_secret_arn: str | None = None

    def validate(self, sync: SyncSettings) -> None:
        """Refuse, at synth time, a combination that cannot work in AWS."""
        if not 1 <= self.worker_min_count <= self.worker_max_count:
            raise ValueError(
                f"workerMinCount ({self.worker_min_count}) must be at least 1 and at most "
                f"workerMaxCount ({self.worker_max_count})"
            )
        processes = self.worker_max_count * self.worker_concurrency
        if sync.message_groups < processes:
            raise ValueError(
                f"syncMessageGroups (SYNC_MESSAGE_GROUPS) is {sync.message_groups}, below the "
                f"{processes} worker processes the scaling allows (workerMaxCount "
                f"{self.worker_max_count} x workerConcurrency {self.worker_concurrency}): a "
                "FIFO group is worked by one process at a time, so the extra processes would "
                "have nothing to do. Raise syncMessageGroups or lower workerMaxCount or "
                "workerConcurrency."
            )
