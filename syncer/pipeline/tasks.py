"""Celery tasks of the pipeline: the apply (on the FIFO sync queue) and the change log's
prune. Thin: each hands its arguments to a service."""

from celery import Task, shared_task
from django.conf import settings

from syncer.pipeline import PRUNE_TASK_NAME, changelog
from syncer.pipeline.apply import TransientApplyError, changes_apply
from syncer.pipeline.stream.contract import APPLY_TASK_NAME


class FifoGroupTask(Task):
    """A task whose retry goes back into the FIFO group it came from.

    Celery re-sends a retried task without SQS attributes, so kombu would put it in group
    "default", where one waiting retry holds up every other retried batch. The original
    message's properties carry its group (kombu keeps them in the message body); the retry's
    deduplication id is new per attempt, or SQS would drop it as a duplicate of the original
    within its five-minute window, and stable per attempt, so a redelivered original that
    retries again is deduplicated."""

    abstract = True

    def retry(self, *args, **options):
        props = self.request.properties or {}
        group = props.get("MessageGroupId")
        if group and "MessageGroupId" not in options:
            base = props.get("MessageDeduplicationId") or self.request.id
            attempt = (self.request.retries or 0) + 1
            options["MessageGroupId"] = group
            options["MessageDeduplicationId"] = f"{base[:100]}:retry-{attempt}"
        return super().retry(*args, **options)


@shared_task(
    base=FifoGroupTask,
    name=APPLY_TASK_NAME,
    acks_late=True,  # idempotent: a redelivered batch converges to the same state
    autoretry_for=(TransientApplyError,),
    retry_backoff=2,
    retry_backoff_max=settings.CELERY_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=None,  # a database outage can outlast any fixed count; nothing is dropped
)
def apply_changes(changes: list[dict]) -> dict:
    result = changes_apply(changes=changes)
    return {"applied": result.applied, "stale": result.stale, "failed": result.failed}


@shared_task(name=PRUNE_TASK_NAME, acks_late=True)  # idempotent: deletes what is past due
def changelog_prune() -> int:
    return changelog.changelog_prune()
