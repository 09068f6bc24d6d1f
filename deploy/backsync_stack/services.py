"""The app services part of the backsync stack: ECS cluster, services and task definitions.

The web app (gunicorn behind a public load balancer), the worker (celery, scaled on the
change queue's backlog), celery beat (exactly one), and two task definitions run by hand:
release (migrate, collectstatic) once per deploy, ops for operator commands (backfill,
reconcile). One image for all (built from the Dockerfile, or a CI image by `imageUri`), one
task role per process with only what that process does.

Like every part (stack.py says why), it builds in the stack's own scope.
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_ecs_patterns as ecs_patterns
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager

from .data import Data
from .monitoring import NAMESPACE
from .network import Network
from .pipeline import Pipeline
from .settings import DeployOptions, SyncSettings

# The worker and the outbox write these; the reconcile/backfill commands scan and batch.
TABLE_READ_WRITE_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:DescribeTable",
    "dynamodb:ConditionCheckItem",
)
# Every task runs on x86: an image built on an arm64 laptop would not start on Fargate.
PLATFORM = ecr_assets.Platform.LINUX_AMD64
RUNTIME_PLATFORM = ecs.RuntimePlatform(
    cpu_architecture=ecs.CpuArchitecture.X86_64,
    operating_system_family=ecs.OperatingSystemFamily.LINUX,
)
# ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPOSITORY(:TAG | @sha256:DIGEST)
ECR_IMAGE_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?P<cn>\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*?)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})|@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
HEALTH_CHECK_PATH = "/healthz?scope=live"
# Visible change messages at which one more worker task starts (ten times: two more).
WORKER_SCALE_OUT_MESSAGES = 50
# The one-off task for operator commands (backfill, reconcile...): the default command
# only reports drift; `--overrides` gives the command to run.
OPS_DEFAULT_COMMAND = ("python", "manage.py", "reconcile")
TASKS = iam.ServicePrincipal("ecs-tasks.amazonaws.com")


def _logs(prefix: str) -> ecs.LogDriver:
    return ecs.LogDrivers.aws_logs(stream_prefix=prefix, log_retention=logs.RetentionDays.ONE_MONTH)


class AppServices:
    def __init__(
        self,
        stack: Stack,
        *,
        sync: SyncSettings,
        options: DeployOptions,
        network: Network,
        data: Data,
        pipeline: Pipeline,
        repo_root: Path,
    ) -> None:
        self._stack = stack
        self.cluster = ecs.Cluster(
            stack, "Cluster", vpc=network.vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )
        # Made here, not by the pattern, so its DNS name can go into ALLOWED_HOSTS.
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            stack, "LoadBalancer", vpc=network.vpc, internet_facing=True
        )
        image = self._image(options.image_uri, repo_root, "AppImage")
        release_image = (
            self._image(options.release_image_uri, repo_root, "ReleaseImage")
            if options.release_image_uri
            else image
        )
        environment = self._environment(sync, options, data, pipeline)
        secret_key = _django_secret_key(stack)
        secrets = {
            # The whole generated secret (JSON: host, port, username, password, dbname);
            # production settings build the database settings from it.
            "DATABASE_SECRET": ecs.Secret.from_secrets_manager(data.db_secret),
            "SECRET_KEY": ecs.Secret.from_secrets_manager(secret_key),
        }
        # Bearer token of /metrics (and /healthz details), only the web app serves them; the
        # load balancer is public. An existing secret by context, else one generated here.
        if options.metrics_token_secret_arn:
            self.metrics_token = secretsmanager.Secret.from_secret_complete_arn(
                stack, "MetricsToken", options.metrics_token_secret_arn
            )
        else:
            self.metrics_token = secretsmanager.Secret(
                stack,
                "MetricsToken",
                description="backsync bearer token for /metrics",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    password_length=48, exclude_punctuation=True
                ),
            )
        web_secrets = {
            **secrets,
            "METRICS_TOKEN": ecs.Secret.from_secrets_manager(self.metrics_token),
        }
        self._roles(data, pipeline)
        run = {"environment": environment, "secrets": secrets}

        self._web(options, network, image, environment, web_secrets)
        self._worker(sync, options, network, pipeline, image, run)
        self._beat(network, image, run)
        self._one_off_tasks(image, release_image, run)

    def _environment(
        self, sync: SyncSettings, options: DeployOptions, data: Data, pipeline: Pipeline
    ) -> dict[str, str]:
        """Every task's environment (the production settings read it)."""
        allowed_hosts = [self.load_balancer.load_balancer_dns_name]
        allowed_hosts += [h.strip() for h in options.allowed_hosts.split(",") if h.strip()]
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_ALLOWED_HOSTS": ",".join(allowed_hosts),
            "AWS_REGION": self._stack.region,
            "AWS_STORAGE_BUCKET_NAME": data.static_bucket.bucket_name,
            "AWS_S3_CUSTOM_DOMAIN": data.static_distribution.distribution_domain_name,
            "DYNAMO_CHEF_TABLE": data.table.table_name,
            "SYNC_QUEUE_NAME": pipeline.sync_queue.queue_name,
            "SYNC_QUEUE_URL": pipeline.sync_queue.queue_url,
            "SYNC_DLQ_NAME": pipeline.sync_dlq.queue_name,
            # The dashboard reads the DLQ depths by URL: no sqs:GetQueueUrl needed.
            "SYNC_DLQ_URL": pipeline.sync_dlq.queue_url,
            "OUTBOX_QUEUE_NAME": pipeline.outbox_queue.queue_name,
            "OUTBOX_QUEUE_URL": pipeline.outbox_queue.queue_url,
            "OUTBOX_DLQ_NAME": pipeline.outbox_dlq.queue_name,
            "OUTBOX_DLQ_URL": pipeline.outbox_dlq.queue_url,
            "RECONCILE_QUEUE_NAME": pipeline.reconcile_queue.queue_name,
            "RECONCILE_QUEUE_URL": pipeline.reconcile_queue.queue_url,
            "RECONCILE_DLQ_NAME": pipeline.reconcile_dlq.queue_name,
            "RECONCILE_DLQ_URL": pipeline.reconcile_dlq.queue_url,
            "SYNC_MESSAGE_GROUPS": str(sync.message_groups),
            # The worker publishes the sync's figures for the alarms (syncer/ops/cloudwatch.py).
            "CLOUDWATCH_METRICS": "true",
            "CLOUDWATCH_NAMESPACE": NAMESPACE,
            "CELERY_TASK_TIME_LIMIT": str(sync.celery_task_time_limit),
            "CELERY_RETRY_BACKOFF_MAX": str(sync.celery_retry_backoff_max),
            "SQS_VISIBILITY_TIMEOUT": str(sync.sqs_visibility_timeout),
            "SQS_MAX_RECEIVE_COUNT": str(sync.sqs_max_receive_count),
            "SQS_WAIT_TIME_SECONDS": "20",
            "LOG_JSON": "true",
            # Without a certificate the load balancer speaks HTTP only (a trial stack):
            # HTTPS redirects, secure cookies and HSTS would lock everyone out.
            "DJANGO_HTTPS": "true" if options.certificate_arn else "false",
        }

    def _roles(self, data: Data, pipeline: Pipeline) -> None:
        """One task role per process, each with only what that process does."""
        stack = self._stack
        self.web_role = iam.Role(stack, "WebTaskRole", assumed_by=TASKS)
        self.worker_role = iam.Role(stack, "WorkerTaskRole", assumed_by=TASKS)
        self.beat_role = iam.Role(stack, "BeatTaskRole", assumed_by=TASKS)
        self.release_role = iam.Role(stack, "ReleaseTaskRole", assumed_by=TASKS)
        # Web: the new API reads and writes the table; legacy writes enqueue the outbox
        # publisher; the admin queues reconcile repairs and shows queue depths.
        data.table.grant(self.web_role, *TABLE_READ_WRITE_ACTIONS)
        pipeline.outbox_queue.grant_send_messages(self.web_role)
        pipeline.reconcile_queue.grant_send_messages(self.web_role)
        # Worker: applies changes (reads the table when an image is too large), publishes
        # the outbox (writes the table), runs reconcile tasks, consumes the three queues and
        # re-sends retries (the ops task, on the worker role, sends reconcile's tasks).
        data.table.grant(self.worker_role, *TABLE_READ_WRITE_ACTIONS)
        for queue in (pipeline.sync_queue, pipeline.outbox_queue, pipeline.reconcile_queue):
            queue.grant_consume_messages(self.worker_role)
            queue.grant_send_messages(self.worker_role)
        for role in (self.web_role, self.worker_role):
            for queue in (
                pipeline.sync_queue,
                pipeline.sync_dlq,
                pipeline.outbox_queue,
                pipeline.outbox_dlq,
                pipeline.reconcile_queue,
                pipeline.reconcile_dlq,
            ):
                queue.grant(role, "sqs:GetQueueAttributes")
        # Beat: only enqueues the periodic outbox sweep (CELERY_BEAT_SCHEDULE).
        pipeline.outbox_queue.grant_send_messages(self.beat_role)
        # The worker runs the beat's metrics task: PutMetricData has no resource-level
        # permissions, so it is held to the sync's namespace by a condition.
        self.worker_role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
            )
        )
        # Release: collectstatic uploads to the static bucket; nothing else in AWS.
        data.static_bucket.grant_read_write(self.release_role)

    def _web(
        self,
        options: DeployOptions,
        network: Network,
        image: ecs.ContainerImage,
        environment: dict[str, str],
        secrets: dict[str, ecs.Secret],
    ) -> None:
        """gunicorn behind the load balancer; with a certificate, HTTPS and a redirect."""
        log_driver_web = _logs("web")
        self.web = ecs_patterns.ApplicationLoadBalancedFargateService(
            self._stack,
            "Web",
            cluster=self.cluster,
            load_balancer=self.load_balancer,
            cpu=512,
            memory_limit_mib=1024,
            desired_count=options.web_desired_count,
            security_groups=[network.app_security_group],
            task_subnets=network.app_subnets,
            public_load_balancer=True,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
            runtime_platform=RUNTIME_PLATFORM,
            task_image_options=ecs_patterns.ApplicationLoadBalancedTaskImageOptions(
                image=image,
                container_name="web",
                container_port=8000,
                environment=environment,
                secrets=secrets,
                task_role=self.web_role,
                log_driver=log_driver_web,
            ),
            **_https_options(self._stack, options.certificate_arn),
        )
        # Liveness only (the process answers, with the task IP as Host, over plain HTTP:
        # /healthz is exempt from the HTTPS redirect). The full /healthz also checks MySQL,
        # DynamoDB and SQS, but an outage of one of them is the same for every task: taking
        # them all out of service would stop the parts that still work (a DynamoDB outage
        # would take the legacy API down with it) and make ECS replace healthy tasks in a
        # loop. Dependency outages are the alarms' job.
        self.web.target_group.configure_health_check(
            path=HEALTH_CHECK_PATH, healthy_http_codes="200"
        )

    def _worker(
        self,
        sync: SyncSettings,
        options: DeployOptions,
        network: Network,
        pipeline: Pipeline,
        image: ecs.ContainerImage,
        run: dict,
    ) -> None:
        """celery worker on the change, outbox and reconcile queues, scaled on the change
        queue's backlog."""
        worker_task = ecs.FargateTaskDefinition(
            self._stack,
            "WorkerTask",
            cpu=512,
            memory_limit_mib=1024,
            task_role=self.worker_role,
            runtime_platform=RUNTIME_PLATFORM,
        )
        worker_task.add_container(
            "worker",
            image=image,
            command=[
                "celery",
                "-A",
                "config",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(options.worker_concurrency),
                "-Q",
                f"{sync.sync_queue_name},{sync.outbox_queue_name},{sync.reconcile_queue_name}",
            ],
            **run,
            logging=_logs("worker"),
            # Celery finishes the running task on SIGTERM (acks late: the rest redeliver).
            stop_timeout=Duration.seconds(120),
        )
        self.worker = ecs.FargateService(
            self._stack,
            "Worker",
            cluster=self.cluster,
            task_definition=worker_task,
            # Set at creation; afterwards the scaling below owns it (CloudFormation only
            # sends a property that changed in the template).
            desired_count=options.worker_min_count,
            security_groups=[network.app_security_group],
            vpc_subnets=network.app_subnets,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
        )
        self._worker_scaling(options, pipeline)

    def _worker_scaling(self, options: DeployOptions, pipeline: Pipeline) -> None:
        """Worker tasks follow the change queue's backlog (visible messages)."""
        scaling = self.worker.auto_scale_task_count(
            min_capacity=options.worker_min_count, max_capacity=options.worker_max_count
        )
        scaling.scale_on_metric(
            "ScaleOnChangeBacklog",
            metric=pipeline.sync_queue.metric_approximate_number_of_messages_visible(
                statistic="Maximum", period=Duration.minutes(1)
            ),
            # A message holds up to 25 changes (100-record batch over 4 groups); a worker
            # applies about 1,000 changes/s against Aurora, so 50 waiting messages is a
            # backlog that lasts, and an empty queue lets one task go.
            scaling_steps=[
                appscaling.ScalingInterval(upper=0, change=-1),
                appscaling.ScalingInterval(lower=WORKER_SCALE_OUT_MESSAGES, change=+1),
                appscaling.ScalingInterval(lower=WORKER_SCALE_OUT_MESSAGES * 10, change=+2),
            ],
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=Duration.minutes(2),
        )

    def _beat(self, network: Network, image: ecs.ContainerImage, run: dict) -> None:
        """Celery beat: exactly one, so a deploy stops the old one before starting the new."""
        beat_task = ecs.FargateTaskDefinition(
            self._stack,
            "BeatTask",
            cpu=256,
            memory_limit_mib=512,
            task_role=self.beat_role,
            runtime_platform=RUNTIME_PLATFORM,
        )
        beat_task.add_container(
            "beat",
            image=image,
            # The image's user cannot write /app; the schedule state is disposable.
            command=[
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                "/tmp/celerybeat-schedule",
            ],
            **run,
            logging=_logs("beat"),
        )
        self.beat = ecs.FargateService(
            self._stack,
            "Beat",
            cluster=self.cluster,
            task_definition=beat_task,
            desired_count=1,
            security_groups=[network.app_security_group],
            vpc_subnets=network.app_subnets,
            min_healthy_percent=0,
            max_healthy_percent=100,
        )

    def _one_off_tasks(
        self, image: ecs.ContainerImage, release_image: ecs.ContainerImage, run: dict
    ) -> None:
        """Task definitions an operator (or the deploy) runs: release and ops."""
        # Run once per deploy, before the services move to new code (deploy/README.md).
        self.release_task = ecs.FargateTaskDefinition(
            self._stack,
            "ReleaseTask",
            cpu=512,
            memory_limit_mib=1024,
            task_role=self.release_role,
            runtime_platform=RUNTIME_PLATFORM,
        )
        self.release_task.add_container(
            "release",
            image=release_image,
            command=[
                "sh",
                "-c",
                "python manage.py migrate --noinput && python manage.py collectstatic --noinput",
            ],
            **run,
            logging=_logs("release"),
        )

        # One-off operator commands (README: adoption, backfill, reconcile): the worker's
        # image and role (table reads and writes, the three queues), its own log prefix.
        self.ops_task = ecs.FargateTaskDefinition(
            self._stack,
            "OpsTask",
            cpu=512,
            memory_limit_mib=1024,
            task_role=self.worker_role,
            runtime_platform=RUNTIME_PLATFORM,
        )
        self.ops_task.add_container(
            "ops",
            image=image,
            command=list(OPS_DEFAULT_COMMAND),
            **run,
            logging=_logs("ops"),
        )

    def _image(self, uri: str | None, repo_root: Path, asset_id: str) -> ecs.ContainerImage:
        if not uri:
            # Built from the repository's Dockerfile by `cdk deploy` (needs Docker there)
            # for x86; the asset repository grants the pull to each execution role.
            return ecs.ContainerImage.from_asset(str(repo_root), platform=PLATFORM)
        match = ECR_IMAGE_URI.match(uri)
        if match is None:
            # Not ECR (a public registry): nothing to grant, ECS pulls it anonymously.
            return ecs.ContainerImage.from_registry(uri)
        if not (match["tag"] or match["digest"]):
            raise ValueError(f"image {uri!r}: name a tag or a digest (release by git sha)")
        partition = "aws-cn" if match["cn"] else "aws"
        repository = ecr.Repository.from_repository_attributes(
            self._stack,
            f"{asset_id}Repository",
            repository_arn=(
                f"arn:{partition}:ecr:{match['region']}:{match['account']}:"
                f"repository/{match['repository']}"
            ),
            repository_name=match["repository"],
        )
        # Unlike from_registry, this grants each execution role the pull
        # (ecr:BatchGetImage, GetDownloadUrlForLayer, GetAuthorizationToken).
        return ecs.ContainerImage.from_ecr_repository(repository, match["tag"] or match["digest"])


def _django_secret_key(stack: Stack) -> secretsmanager.Secret:
    return secretsmanager.Secret(
        stack,
        "DjangoSecretKey",
        description="backsync Django SECRET_KEY",
        generate_secret_string=secretsmanager.SecretStringGenerator(
            password_length=64, exclude_punctuation=True
        ),
    )


def _https_options(stack: Stack, certificate_arn: str | None) -> dict:
    if not certificate_arn:
        return {}
    return {
        "certificate": acm.Certificate.from_certificate_arn(stack, "Certificate", certificate_arn),
        "protocol": elbv2.ApplicationProtocol.HTTPS,
        "redirect_http": True,
    }
