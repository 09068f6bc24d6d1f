"""The backsync stack: DynamoDB table and stream, stream handler, queues, Aurora, ECS, S3.

Numbers that must agree with the application settings (config/settings/base.py) are
passed in through `SyncSettings` (settings.py), whose defaults are the settings' defaults.
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from .data import Data
from .monitoring import Monitored, Monitoring
from .network import Network
from .pipeline import Pipeline
from .services import AppServices
from .settings import DeployOptions, SyncSettings

# SyncSettings and DeployOptions live in settings.py; importable from here as before.
__all__ = ["BacksyncStack", "DeployOptions", "SyncSettings"]


class BacksyncStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repo_root: Path,
        lambda_asset_dir: Path,
        options: DeployOptions | None = None,
        sync: SyncSettings | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        options = options or DeployOptions()
        sync = sync or SyncSettings()
        options.validate(sync)

        network = Network(self)
        self.vpc = network.vpc
        self.app_security_group = network.app_security_group
        self.data = Data(self, sync=sync, options=options, network=network)
        self.table = self.data.table
        self.database = self.data.database
        db_secret = self.data.db_secret
        self.static_bucket = self.data.static_bucket
        self.static_distribution = self.data.static_distribution

        self.pipeline = Pipeline(
            self, sync=sync, table=self.table, lambda_asset_dir=lambda_asset_dir
        )
        self.sync_queue = self.pipeline.sync_queue
        self.sync_dlq = self.pipeline.sync_dlq
        self.outbox_queue = self.pipeline.outbox_queue
        self.outbox_dlq = self.pipeline.outbox_dlq
        self.stream_failures = self.pipeline.stream_failures
        self.stream_handler = self.pipeline.stream_handler

        self.services = AppServices(
            self,
            sync=sync,
            options=options,
            network=network,
            data=self.data,
            pipeline=self.pipeline,
            repo_root=repo_root,
        )
        self.cluster = self.services.cluster
        self.release_task = self.services.release_task
        self.ops_task = self.services.ops_task
        self.metrics_token = self.services.metrics_token

        self.monitoring = Monitoring(
            self,
            "Monitoring",
            monitored=Monitored(
                stream_handler=self.stream_handler,
                sync_queue=self.sync_queue,
                sync_dlq=self.sync_dlq,
                outbox_queue=self.outbox_queue,
                outbox_dlq=self.outbox_dlq,
                stream_failures=self.stream_failures,
                database=self.database,
                db_max_capacity=options.db_max_capacity,
            ),
            alarm_email=options.alarm_email,
        )

        for name, value in {
            "ClusterName": self.cluster.cluster_name,
            "ReleaseTaskDefinitionArn": self.release_task.task_definition_arn,
            "OpsTaskDefinitionArn": self.ops_task.task_definition_arn,
            "AlarmTopicArn": self.monitoring.topic.topic_arn,
            "DashboardName": self.monitoring.dashboard.dashboard_name,
            "AppSecurityGroupId": self.app_security_group.security_group_id,
            "AppSubnetIds": ",".join(
                s.subnet_id
                for s in self.vpc.select_subnets(
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                ).subnets
            ),
            "StaticUrl": f"https://{self.static_distribution.distribution_domain_name}/",
            "TableName": self.table.table_name,
            "SyncQueueUrl": self.sync_queue.queue_url,
            "StreamFailuresQueueUrl": self.stream_failures.queue_url,
            "SyncDlqUrl": self.sync_dlq.queue_url,
            "OutboxDlqUrl": self.outbox_dlq.queue_url,
            "DatabaseSecretArn": db_secret.secret_arn,
            "MetricsTokenSecretArn": self.metrics_token.secret_arn,
        }.items():
            CfnOutput(self, name, value=value)
