"""The ops part of the backsync stack: monitoring (monitoring.py) and the stack's outputs.

The outputs are what an operator and the release flow read (README, Deploy): the cluster,
the release and ops task definitions with the subnets and security group to run them in,
the alarm topic and dashboard, the queue URLs, the secrets.

Like every part (stack.py says why), it builds in the stack's own scope; the alarms and the
dashboard are the one nested construct ("Monitoring"), as they always were.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack

from .data import Data
from .monitoring import Monitored, Monitoring
from .network import Network
from .pipeline import Pipeline
from .services import AppServices
from .settings import DeployOptions


class Ops:
    def __init__(
        self,
        stack: Stack,
        *,
        options: DeployOptions,
        network: Network,
        data: Data,
        pipeline: Pipeline,
        services: AppServices,
    ) -> None:
        self.monitoring = Monitoring(
            stack,
            "Monitoring",
            monitored=Monitored(
                stream_handler=pipeline.stream_handler,
                sync_queue=pipeline.sync_queue,
                sync_dlq=pipeline.sync_dlq,
                outbox_queue=pipeline.outbox_queue,
                outbox_dlq=pipeline.outbox_dlq,
                reconcile_queue=pipeline.reconcile_queue,
                reconcile_dlq=pipeline.reconcile_dlq,
                stream_failures=pipeline.stream_failures,
                database=data.database,
                db_max_capacity=options.db_max_capacity,
            ),
            alarm_email=options.alarm_email,
        )
        monitoring = self.monitoring
        app_subnets = network.vpc.select_subnets(subnet_type=network.app_subnets.subnet_type)
        for name, value in {
            "ClusterName": services.cluster.cluster_name,
            "ReleaseTaskDefinitionArn": services.release_task.task_definition_arn,
            "OpsTaskDefinitionArn": services.ops_task.task_definition_arn,
            "AlarmTopicArn": monitoring.topic.topic_arn,
            "DashboardName": monitoring.dashboard.dashboard_name,
            "AppSecurityGroupId": network.app_security_group.security_group_id,
            "AppSubnetIds": ",".join(s.subnet_id for s in app_subnets.subnets),
            "StaticUrl": f"https://{data.static_distribution.distribution_domain_name}/",
            "TableName": data.table.table_name,
            "SyncQueueUrl": pipeline.sync_queue.queue_url,
            "StreamFailuresQueueUrl": pipeline.stream_failures.queue_url,
            "SyncDlqUrl": pipeline.sync_dlq.queue_url,
            "OutboxDlqUrl": pipeline.outbox_dlq.queue_url,
            "ReconcileDlqUrl": pipeline.reconcile_dlq.queue_url,
            "DatabaseSecretArn": data.db_secret.secret_arn,
            "MetricsTokenSecretArn": services.metrics_token.secret_arn,
        }.items():
            CfnOutput(stack, name, value=value)
