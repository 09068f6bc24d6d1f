"""The outbox: Django writes captured, recorded and published to DynamoDB.

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

PUBLISH_TASK_NAME = "syncer.outbox_publish"
SWEEP_TASK_NAME = "syncer.outbox_sweep"
