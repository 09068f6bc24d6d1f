"""The stack's SQS queues: every one encrypted, TLS only, messages kept 14 days.

`queue_with_dlq` makes a queue and the dead-letter queue it redrives to, FIFO or standard;
`encrypted_queue` a queue on its own (the stream failures, which nothing consumes automatically).
Both create in the scope given (the stack): the construct ids are the logical ids'
human part, so they must not change (tests/deploy/test_stack_constructs.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from constructs import Construct

RETENTION = Duration.days(14)


@dataclass(frozen=True)
class QueueWithDlq:
    queue: sqs.Queue
    dlq: sqs.Queue


def encrypted_queue(
    scope: Construct,
    construct_id: str,
    *,
    queue_name: str,
    fifo: bool = False,
    visibility_timeout: Duration | None = None,
    dead_letter_queue: sqs.DeadLetterQueue | None = None,
) -> sqs.Queue:
    return sqs.Queue(
        scope,
        construct_id,
        queue_name=queue_name,
        # Left out for a standard queue (CloudFormation's default), as it always was.
        fifo=True if fifo else None,
        visibility_timeout=visibility_timeout,
        retention_period=RETENTION,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        dead_letter_queue=dead_letter_queue,
    )


def queue_with_dlq(
    scope: Construct,
    prefix: str,
    *,
    queue_name: str,
    dlq_name: str,
    fifo: bool,
    visibility_timeout: Duration,
    max_receive_count: int,
) -> QueueWithDlq:
    """`{prefix}Queue`, redriving after `max_receive_count` receives to `{prefix}DeadLetterQueue`.

    A FIFO queue needs a FIFO dead-letter queue: both take `fifo`.
    """
    dlq = encrypted_queue(scope, f"{prefix}DeadLetterQueue", queue_name=dlq_name, fifo=fifo)
    main = encrypted_queue(
        scope,
        f"{prefix}Queue",
        queue_name=queue_name,
        fifo=fifo,
        visibility_timeout=visibility_timeout,
        dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=max_receive_count),
    )
    return QueueWithDlq(queue=main, dlq=dlq)
