"""The sync pipeline: the stream handler package (stream/), the apply and its change log.

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

PRUNE_TASK_NAME = "syncer.changelog_prune"
