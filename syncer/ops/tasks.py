"""Celery task of operations: the dashboard's figures to CloudWatch (beat, every period)."""

from celery import shared_task

from syncer.ops import CLOUDWATCH_PUBLISH_TASK_NAME, cloudwatch


# Not acks_late: a lost publish is replaced by the next period's, a replayed one is stale.
@shared_task(name=CLOUDWATCH_PUBLISH_TASK_NAME, ignore_result=True)
def cloudwatch_publish() -> int:
    return len(cloudwatch.cloudwatch_metrics_publish())
