"""The data part of the backsync stack: what holds state, and is never replaced.

The DynamoDB table (source of truth) with the stream the sync reads, the Aurora MySQL
Serverless v2 cluster (the legacy cheftable) and the private S3 bucket of the static files
behind CloudFront. Table and bucket are retained, the cluster snapshotted, on deletion.

Like every part (stack.py says why), it builds in the stack's own scope: a new logical id
for one of these would make CloudFormation create an empty one and delete the old.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager

from .network import DB_SUBNETS, Network
from .settings import DeployOptions, SyncSettings


class Data:
    def __init__(
        self, stack: Stack, *, sync: SyncSettings, options: DeployOptions, network: Network
    ) -> None:
        # --- DynamoDB: the source of truth, with the stream the sync reads -------------
        self.table = dynamodb.Table(
            stack,
            "ChefTable",
            table_name=sync.table_name,
            partition_key=dynamodb.Attribute(
                name=sync.table_key, type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            # MODIFY needs the new image; the old image lets a REMOVE carry what was deleted.
            stream=dynamodb.StreamViewType.NEW_AND_OLD_IMAGES,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,
        )

        # --- Aurora MySQL Serverless v2 (legacy cheftable lives here) -------------------
        self.database = rds.DatabaseCluster(
            stack,
            "Database",
            engine=rds.DatabaseClusterEngine.aurora_mysql(
                version=rds.AuroraMysqlEngineVersion.VER_3_08_2
            ),
            credentials=rds.Credentials.from_generated_secret("backsync"),
            default_database_name=sync.database_name,
            writer=rds.ClusterInstance.serverless_v2("writer", publicly_accessible=False),
            serverless_v2_min_capacity=options.db_min_capacity,
            serverless_v2_max_capacity=options.db_max_capacity,
            vpc=network.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=DB_SUBNETS),
            security_groups=[network.db_security_group],
            storage_encrypted=True,
            backup=rds.BackupProps(retention=Duration.days(7)),
            deletion_protection=True,
            removal_policy=RemovalPolicy.SNAPSHOT,
            # The release task's migrate creates the capture triggers (syncer/outbox/capture.py);
            # with binary logging on, that needs this (there is no SUPER on Aurora).
            parameters={"log_bin_trust_function_creators": "1"},
        )
        secret = self.database.secret
        assert secret is not None  # from_generated_secret always makes one
        # JSON: host, port, username, password, dbname (the tasks' DATABASE_SECRET).
        self.db_secret: secretsmanager.ISecret = secret

        # --- Static files: private bucket behind CloudFront ------------------------------
        self.static_bucket = s3.Bucket(
            stack,
            "StaticBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.static_distribution = cloudfront.Distribution(
            stack,
            "StaticDistribution",
            comment="backsync static files",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.static_bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
            ),
        )
