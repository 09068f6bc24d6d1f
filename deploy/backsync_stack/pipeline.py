"""The pipeline part of the backsync stack: the queues and the stream handler between stores.

DynamoDB -> MySQL: the table's stream feeds the stream handler Lambda (event source
mapping), which sends each batch to the SQS FIFO change queue the worker applies; a change
the worker never acknowledges goes to the change DLQ, a stream batch Lambda gives up on to
the stream failures queue. MySQL -> DynamoDB: the outbox queue (legacy writes, published by
the worker) and its DLQ.

Like every part (stack.py says why), it builds in the stack's own scope.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs

from .lambda_asset import HANDLER
from .queues import encrypted_queue, queue_with_dlq
from .settings import SyncSettings


class Pipeline:
    def __init__(
        self,
        stack: Stack,
        *,
        sync: SyncSettings,
        table: dynamodb.ITable,
        lambda_asset_dir: Path,
    ) -> None:
        # --- SQS: the change, outbox and reconcile queues, each with its DLQ ----------------
        visibility = Duration.seconds(sync.sqs_visibility_timeout)
        # The change queue (handler -> worker, FIFO); the outbox's; and reconcile's own, for
        # its distributed tasks and the admin's repair runs, so a long reconcile never holds
        # up outbox publishes.
        pairs = {
            construct_id: queue_with_dlq(
                stack,
                construct_id,
                queue_name=name,
                dlq_name=dlq_name,
                fifo=fifo,
                visibility_timeout=visibility,
                max_receive_count=sync.sqs_max_receive_count,
            )
            for construct_id, name, dlq_name, fifo in (
                ("Sync", sync.sync_queue_name, sync.sync_dlq_name, True),
                ("Outbox", sync.outbox_queue_name, sync.outbox_dlq_name, False),
                ("Reconcile", sync.reconcile_queue_name, sync.reconcile_dlq_name, False),
            )
        }
        self.sync_queue, self.sync_dlq = pairs["Sync"].queue, pairs["Sync"].dlq
        self.outbox_queue, self.outbox_dlq = pairs["Outbox"].queue, pairs["Outbox"].dlq
        self.reconcile_queue, self.reconcile_dlq = pairs["Reconcile"].queue, pairs["Reconcile"].dlq
        # Where the event source mapping puts a batch it gave up on (metadata of the
        # shard range, not the records): the operator replays it with the relay/backfill.
        self.stream_failures = encrypted_queue(
            stack, "StreamFailuresQueue", queue_name=sync.stream_failures_queue_name
        )

        # --- Stream handler Lambda and its event source mapping -------------------------
        handler_logs = logs.LogGroup(
            stack, "StreamHandlerLogs", retention=logs.RetentionDays.ONE_MONTH
        )
        self.stream_handler = lambda_.Function(
            stack,
            "StreamHandler",
            runtime=lambda_.Runtime.PYTHON_3_12,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(lambda_asset_dir)),
            timeout=Duration.seconds(60),
            memory_size=256,
            log_group=handler_logs,
            environment={
                "SYNC_QUEUE_URL": self.sync_queue.queue_url,
                "SYNC_QUEUE_NAME": self.sync_queue.queue_name,
                "SYNC_MESSAGE_GROUPS": str(sync.message_groups),
                "POWERTOOLS_SERVICE_NAME": "backsync-stream-handler",
            },
        )
        self.stream_handler.add_event_source(
            event_sources.DynamoEventSource(
                table,
                starting_position=lambda_.StartingPosition.TRIM_HORIZON,
                batch_size=sync.stream_batch_size,
                max_batching_window=Duration.seconds(sync.stream_batching_window_seconds),
                bisect_batch_on_error=True,
                retry_attempts=sync.stream_retry_attempts,
                max_record_age=Duration.hours(sync.stream_max_record_age_hours),
                report_batch_item_failures=True,
                on_failure=event_sources.SqsDlq(self.stream_failures),
            )
        )
        # The mapping grants the stream reads; the handler only ever sends to the FIFO queue.
        self.sync_queue.grant_send_messages(self.stream_handler)
