"""Operations: the admin, the sync dashboard, /healthz, /metrics and their CloudWatch
publishing, the audit trail, operator access and command progress.

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

CLOUDWATCH_PUBLISH_TASK_NAME = "syncer.cloudwatch_publish"
