"""Reconcile: compare MySQL and DynamoDB and repair the differences. report (options and
reports) <- scan (DynamoDB, spilled by key hash) <- repair <- recheck (drift under
traffic) <- compare (MySQL against the spill, bucket by bucket) <- run (local or
distributed orchestration, the admin's repair run).

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

SCAN_TASK_NAME = "syncer.reconcile_scan"
COMPARE_TASK_NAME = "syncer.reconcile_compare"
REPAIR_TASK_NAME = "syncer.reconcile_repair"
