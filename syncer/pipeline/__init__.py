"""The sync pipeline, DynamoDB -> MySQL: the stream handler package the Lambda ships
(stream/: the handler and the change contract, Django-free), the apply task and service
(apply, tasks), the applied-change log's retention (changelog) and the operator's replay of
failed changes (failed).

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

PRUNE_TASK_NAME = "syncer.changelog_prune"
