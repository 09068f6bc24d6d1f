"""Operations: admin, dashboard, health, metrics and their CloudWatch publishing.

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

CLOUDWATCH_PUBLISH_TASK_NAME = "syncer.cloudwatch_publish"
