"""Celery tasks of the sync. Thin: each hands its arguments to a service."""

from celery import Task, shared_task
from django.conf import settings
from django.db import OperationalError

from syncer.ops import CLOUDWATCH_PUBLISH_TASK_NAME, cloudwatch
from syncer.outbox import PUBLISH_TASK_NAME, SWEEP_TASK_NAME
from syncer.outbox import publish as outbox
from syncer.pipeline import PRUNE_TASK_NAME, changelog
from syncer.pipeline.apply import TransientApplyError, changes_apply
from syncer.pipeline.stream.contract import APPLY_TASK_NAME
from syncer.reconcile import COMPARE_TASK_NAME, REPAIR_TASK_NAME, SCAN_TASK_NAME


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


@shared_task(
    name=PUBLISH_TASK_NAME,
    acks_late=True,  # idempotent: publishing an entry twice writes once
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=settings.CELERY_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    max_retries=None,
)
def outbox_publish(entry_id: int) -> str:
    return outbox.outbox_publish(entry_id=entry_id)


@shared_task(name=SWEEP_TASK_NAME, acks_late=True)
def outbox_sweep() -> int:
    return outbox.outbox_sweep()


@shared_task(name=PRUNE_TASK_NAME, acks_late=True)  # idempotent: deletes what is past due
def changelog_prune() -> int:
    return changelog.changelog_prune()


# Not acks_late: a lost publish is replaced by the next period's, a replayed one is stale.
@shared_task(name=CLOUDWATCH_PUBLISH_TASK_NAME, ignore_result=True)
def cloudwatch_publish() -> int:
    return len(cloudwatch.cloudwatch_metrics_publish())


# --- reconcile (manage.py reconcile --distributed) ------------------------------------
# Results go to syncer.ReconcileTask (the project runs without a result backend).


@shared_task(name=SCAN_TASK_NAME, acks_late=True)
def reconcile_scan(run_id: int, mapping: str, segment: int) -> dict:
    from syncer.reconcile.run import segment_scan_task

    return segment_scan_task(run_id=run_id, mapping=mapping, segment=segment)


@shared_task(name=COMPARE_TASK_NAME, acks_late=True)
def reconcile_compare(run_id: int, mapping: str, bucket: int, buckets: int) -> dict:
    from syncer.reconcile.run import bucket_compare_task

    return bucket_compare_task(run_id=run_id, mapping=mapping, bucket=bucket, buckets=buckets)


# --- the admin's reconcile repair (syncer.pipeline.failed.reconcile_repair_request) -----------
# Not acks_late: a run is long and conditioned on what it scanned; a lost one is run again
# by hand rather than redelivered while it may still be running.


@shared_task(name=REPAIR_TASK_NAME, acks_late=False)
def reconcile_repair(mapping_names: list[str], direction: str, user_id: int | None) -> int:
    from syncer.pipeline.failed import reconcile_repair_run

    report = reconcile_repair_run(mapping_names=mapping_names, direction=direction, user_id=user_id)
    return report.unrepaired
