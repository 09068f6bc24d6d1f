"""Celery tasks of reconcile: the distributed run's scan and compare, and the admin's repair
run. Thin: each hands its arguments to a service, imported when the task runs."""

from celery import shared_task

from syncer.reconcile import COMPARE_TASK_NAME, REPAIR_TASK_NAME, SCAN_TASK_NAME

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


# --- the admin's reconcile repair (syncer.reconcile.run.reconcile_repair_request) ---
# Not acks_late: a run is long and conditioned on what it scanned; a lost one is run again
# by hand rather than redelivered while it may still be running.


@shared_task(name=REPAIR_TASK_NAME, acks_late=False)
def reconcile_repair(mapping_names: list[str], direction: str, user_id: int | None) -> int:
    from syncer.reconcile.run import reconcile_repair_run

    report = reconcile_repair_run(mapping_names=mapping_names, direction=direction, user_id=user_id)
    return report.unrepaired
