"""Alarms, their SNS topic and the CloudWatch dashboard of the backsync stack.

The sync's own figures (outbox backlog, open failed changes, lag, throughput) are the ones
the admin dashboard shows; the worker publishes them to CloudWatch under `NAMESPACE`
(`syncer/ops/cloudwatch.py`, beat task `syncer.cloudwatch_publish`). The metric names here and
there must agree: `tests/deploy/test_cdk_stack.py` checks the template against that module.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

NAMESPACE = "Backsync"
# Metric names published by syncer/ops/cloudwatch.py (same strings there).
OUTBOX_BACKLOG = "OutboxBacklog"
OUTBOX_FAILED = "OutboxFailed"
FAILED_CHANGES_OPEN = "FailedChangesOpen"
CONFLICTS_OPEN = "ConflictsOpen"
CHANGES_APPLIED = "ChangesApplied"
SYNC_LAG_P50 = "SyncLagP50"
SYNC_LAG_P99 = "SyncLagP99"


@dataclass(frozen=True)
class AlarmThresholds:
    # Lambda's IteratorAge (ms): how far the handler is behind the stream's newest record.
    iterator_age_ms: int = 120_000
    # Oldest message in the FIFO change queue (s): the worker is stuck or far behind.
    # Below the queue's visibility timeout (660 s), so a stuck message alarms before it
    # is handed to a second worker.
    oldest_change_seconds: int = 600
    # Outbox entries not yet in DynamoDB; the publisher drains hundreds a second.
    outbox_backlog: int = 100


@dataclass
class Monitored:
    """The resources the alarms and the dashboard look at."""

    stream_handler: lambda_.IFunction
    sync_queue: sqs.IQueue
    sync_dlq: sqs.IQueue
    outbox_queue: sqs.IQueue
    outbox_dlq: sqs.IQueue
    reconcile_queue: sqs.IQueue
    reconcile_dlq: sqs.IQueue
    stream_failures: sqs.IQueue
    database: rds.DatabaseCluster
    db_max_capacity: float


def sync_metric(name: str, *, statistic: str = "Maximum", unit=None) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        statistic=statistic,
        period=Duration.minutes(1),
        unit=unit,
    )


class Monitoring(Construct):
    """SNS topic (optional e-mail subscription), one alarm per failure mode, a dashboard."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        monitored: Monitored,
        alarm_email: str | None = None,
        thresholds: AlarmThresholds | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        m = monitored
        t = thresholds or AlarmThresholds()
        self.topic = sns.Topic(self, "AlarmTopic", display_name="backsync alarms")
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self._action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        five_min = Duration.minutes(5)

        # --- at the source: the stream handler ----------------------------------------
        iterator_age = m.stream_handler.metric(
            "IteratorAge", statistic="Maximum", period=Duration.minutes(1)
        )
        self._alarm(
            "StreamIteratorAge",
            iterator_age,
            t.iterator_age_ms,
            periods=5,
            description="Stream handler more than 2 min behind the table's stream for 5 min",
        )
        handler_errors = m.stream_handler.metric_errors(statistic="Sum", period=five_min)
        self._alarm(
            "StreamHandlerErrors",
            handler_errors,
            1,
            description="The stream handler failed (its batch is retried, then bisected)",
        )
        # --- records and messages given up on ----------------------------------------
        for alarm_id, queue, what in (
            ("StreamFailuresNotEmpty", m.stream_failures, "Lambda gave up on stream records"),
            ("SyncDlqNotEmpty", m.sync_dlq, "changes the worker never acknowledged"),
            ("OutboxDlqNotEmpty", m.outbox_dlq, "outbox publishes never acknowledged"),
            ("ReconcileDlqNotEmpty", m.reconcile_dlq, "reconcile tasks never acknowledged"),
        ):
            self._alarm(
                alarm_id,
                queue.metric_approximate_number_of_messages_visible(
                    statistic="Maximum", period=five_min
                ),
                1,
                description=f"Not empty: {what} (README, Deploy > Roll back, says what to do)",
            )
        oldest = m.sync_queue.metric_approximate_age_of_oldest_message(
            statistic="Maximum", period=five_min
        )
        self._alarm(
            "SyncQueueOldestMessage",
            oldest,
            t.oldest_change_seconds,
            description="A change waited 10 min in the change queue: workers stuck or too few",
        )
        # --- the sync's own figures (published by the worker) --------------------------
        self._alarm(
            "OutboxBacklog",
            sync_metric(OUTBOX_BACKLOG),
            t.outbox_backlog,
            periods=5,
            # No figure means no beat/worker publishing, which also means no outbox sweep.
            missing=cloudwatch.TreatMissingData.BREACHING,
            description="Legacy writes waiting to reach DynamoDB for 5 min (or no figures)",
        )
        self._alarm(
            "OutboxFailed",
            sync_metric(OUTBOX_FAILED),
            1,
            description="Outbox entries that gave up: see the admin, Sync > Outbox",
        )
        self._alarm(
            "FailedChangesOpen",
            sync_metric(FAILED_CHANGES_OPEN),
            1,
            description="Changes kept as failed: replay or discard them in the admin",
        )
        # --- Aurora at its ceiling ------------------------------------------------------
        capacity = m.database.metric_serverless_database_capacity(
            statistic="Maximum", period=five_min
        )
        self._alarm(
            "DatabaseAtMaxCapacity",
            capacity,
            m.db_max_capacity,
            periods=3,
            description="Aurora at its maximum ACU for 15 min: raise dbMaxCapacity",
        )

        self.dashboard = self._dashboard(m, iterator_age, handler_errors, oldest)

    def _alarm(
        self,
        alarm_id: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        *,
        periods: int = 1,
        missing: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
        description: str,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            alarm_id,
            metric=metric,
            threshold=threshold,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=missing,
            alarm_description=description,
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms[alarm_id] = alarm
        return alarm

    def _dashboard(
        self, m: Monitored, iterator_age, handler_errors, oldest
    ) -> cloudwatch.Dashboard:
        minute = Duration.minutes(1)
        queues = (
            ("changes", m.sync_queue),
            ("changes DLQ", m.sync_dlq),
            ("outbox", m.outbox_queue),
            ("outbox DLQ", m.outbox_dlq),
            ("reconcile", m.reconcile_queue),
            ("reconcile DLQ", m.reconcile_dlq),
            ("stream failures", m.stream_failures),
        )
        dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name="backsync", default_interval=Duration.hours(3)
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Lag",
                left=[
                    sync_metric(SYNC_LAG_P50).with_(label="sync lag p50 (s)"),
                    sync_metric(SYNC_LAG_P99).with_(label="sync lag p99 (s)"),
                    oldest.with_(label="oldest change in queue (s)", period=minute),
                ],
                right=[iterator_age.with_(label="stream iterator age (ms)")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Throughput",
                left=[
                    sync_metric(CHANGES_APPLIED, statistic="Sum").with_(
                        label="changes applied to MySQL"
                    ),
                    m.stream_handler.metric_invocations(period=minute).with_(
                        label="stream handler invocations"
                    ),
                    m.sync_queue.metric_number_of_messages_sent(period=minute).with_(
                        label="change messages sent"
                    ),
                    m.outbox_queue.metric_number_of_messages_deleted(period=minute).with_(
                        label="outbox publishes done"
                    ),
                ],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Failures",
                left=[
                    handler_errors.with_(label="stream handler errors", period=minute),
                    sync_metric(FAILED_CHANGES_OPEN).with_(label="open failed changes"),
                    sync_metric(OUTBOX_FAILED).with_(label="outbox entries failed"),
                    sync_metric(CONFLICTS_OPEN).with_(label="open conflicts"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Queue depths",
                left=[
                    q.metric_approximate_number_of_messages_visible(
                        statistic="Maximum", period=minute
                    ).with_(label=f"{label} (visible)")
                    for label, q in queues
                ]
                + [sync_metric(OUTBOX_BACKLOG).with_(label="outbox backlog (MySQL)")],
                width=12,
            ),
        )
        dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarms", alarms=list(self.alarms.values()), width=24, height=4
            )
        )
        return dashboard
