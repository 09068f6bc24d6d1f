"""Celery tasks of the outbox: publish one entry, and the periodic sweep. Thin: each hands its
arguments to a service."""

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from syncer.outbox import PUBLISH_TASK_NAME, SWEEP_TASK_NAME, publish, sweep


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
    return publish.outbox_publish(entry_id=entry_id)


@shared_task(name=SWEEP_TASK_NAME, acks_late=True)
def outbox_sweep() -> int:
    return sweep.outbox_sweep()
