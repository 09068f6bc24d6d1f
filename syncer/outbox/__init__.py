"""The outbox: legacy writes to MySQL captured (capture: triggers), recorded (record),
published to DynamoDB conditioned on the item version (publish), swept when due (sweep);
and the key-level repairs that bring one store back to the other (resync).

Task names are the wire format (messages and the beat schedule carry them): defined once
here, Django-free, so settings can route and schedule by them.
"""

PUBLISH_TASK_NAME = "syncer.outbox_publish"
SWEEP_TASK_NAME = "syncer.outbox_sweep"
