"""Synthesise the CDK app (offline, no Docker, no AWS account) and check what matters."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk", reason="needs the deploy extra (aws-cdk-lib)")

from aws_cdk.assertions import Match, Template  # noqa: E402

pytestmark = pytest.mark.deploy

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
# Actions that have no resource-level permissions, so "*" is the only possible resource.
STAR_RESOURCE_ALLOWED = {
    "dynamodb:ListStreams",
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",  # held to the sync's namespace by a condition (test below)
}
TABLE_WRITES = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Scan",
    "dynamodb:Query",
    "dynamodb:BatchWriteItem",
}
STREAM_READS = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}


# A CI build as the README's release flow passes it, and a second repository by digest for
# the release task; the other context keys away from their defaults.
CI_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/backsync:3f2a9c1"
CI_RELEASE_IMAGE = "111122223333.dkr.ecr.eu-west-1.amazonaws.com/backsync-next@sha256:" + "ab" * 32
METRICS_TOKEN_ARN = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:backsync/metrics-AbCdEf"
CI_CONTEXT = {
    "lambdaDeps": "none",
    "imageUri": CI_IMAGE,
    "releaseImageUri": CI_RELEASE_IMAGE,
    "alarmEmail": "oncall@example.com",
    "metricsTokenSecretArn": METRICS_TOKEN_ARN,
    "workerMinCount": "2",
    "workerMaxCount": "4",
    "syncMessageGroups": "8",
    "dbMaxCapacity": "16",
}


def _deploy_module():
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    sys.path.insert(0, str(DEPLOY_DIR))
    try:
        import backsync_stack
        from backsync_stack import app as app_module
    finally:
        sys.path.remove(str(DEPLOY_DIR))
    return backsync_stack, app_module


def _synthesise(tmp_path_factory, context: dict) -> dict:
    backsync_stack, app_module = _deploy_module()
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, stack = backsync_stack.make_app(context, outdir=str(outdir))
    app.synth()
    return {
        "template": Template.from_stack(stack),
        "stack": stack,
        "outdir": outdir,
        "lambda_dir": app_module.LAMBDA_BUILD_DIR,
        "context": context,
    }


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """One synthesis for the whole module (about 10 s)."""
    # No imageUri: the image is the repository's Dockerfile as an asset, which proves that
    # synthesis stages it without Docker. lambdaDeps=none keeps synthesis offline.
    return _synthesise(tmp_path_factory, {"lambdaDeps": "none"})


@pytest.fixture(scope="module")
def synth_ci(tmp_path_factory):
    """The stack as a CI release deploys it (imageUri), with the other options set."""
    return _synthesise(tmp_path_factory, CI_CONTEXT)


@pytest.fixture(scope="module", params=["asset", "ci"])
def either(request):
    """Each synthesis in turn: checks that must hold with and without imageUri."""
    return request.getfixturevalue("synth" if request.param == "asset" else "synth_ci")


@pytest.fixture(scope="module")
def template(synth) -> Template:
    return synth["template"]


def _resources(template: Template, type_: str) -> dict[str, dict]:
    return template.find_resources(type_)


def _logical_id(template: Template, type_: str, **props) -> str:
    found = template.find_resources(type_, {"Properties": props})
    assert len(found) == 1, f"expected one {type_} with {props}, found {list(found)}"
    return next(iter(found))


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _statements(template: Template):
    """(logical id, role refs, statement) for every IAM statement in the template."""
    for lid, res in template.to_json()["Resources"].items():
        props = res.get("Properties", {})
        docs = []
        if res["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            docs.append((props["PolicyDocument"], props.get("Roles", [])))
        elif res["Type"] == "AWS::IAM::Role":
            docs += [(p["PolicyDocument"], [{"Ref": lid}]) for p in props.get("Policies", [])]
        elif res["Type"] in {"AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy"}:
            docs.append((props["PolicyDocument"], []))
        for doc, roles in docs:
            for statement in doc["Statement"]:
                yield lid, roles, statement


def _role_grants(template: Template, role_id: str) -> list[tuple[set[str], list]]:
    """(actions, resources) of every Allow statement attached to a role."""
    grants = []
    for _, roles, st in _statements(template):
        if {"Ref": role_id} in roles and st["Effect"] == "Allow":
            grants.append((set(_as_list(st["Action"])), _as_list(st["Resource"])))
    return grants


def _role_of(template: Template, prefix: str) -> str:
    roles = [lid for lid in _resources(template, "AWS::IAM::Role") if lid.startswith(prefix)]
    assert len(roles) == 1, roles
    return roles[0]


def _getatt(lid: str, attr: str = "Arn") -> dict:
    return {"Fn::GetAtt": [lid, attr]}


# --- DynamoDB ----------------------------------------------------------------------------
def test_table_has_key_on_demand_stream_pitr_and_encryption(template):
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": "chef",
            "KeySchema": [{"AttributeName": "ChefId", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "ChefId", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
    )
    table = next(iter(_resources(template, "AWS::DynamoDB::Table").values()))
    assert table["DeletionPolicy"] == "Retain"


# --- stream handler and its event source mapping -------------------------------------------
def test_event_source_mapping_settings(template):
    table_id = _logical_id(template, "AWS::DynamoDB::Table", TableName="chef")
    failures_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-stream-failures")
    template.resource_count_is("AWS::Lambda::EventSourceMapping", 1)
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": _getatt(table_id, "StreamArn"),
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 1000,
            "MaximumBatchingWindowInSeconds": 0,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 5,
            "MaximumRecordAgeInSeconds": 86400,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "DestinationConfig": {"OnFailure": {"Destination": _getatt(failures_id)}},
        },
    )


def test_handler_function_runs_the_projects_handler(template, synth):
    sync_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-changes.fifo")
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.12",
            "Handler": "syncer.pipeline.stream.handler.handler",
            "Environment": {"Variables": Match.object_like({"SYNC_QUEUE_URL": {"Ref": sync_id}})},
        },
    )
    # The asset is the project's own code, copied unchanged, with no Django package init.
    lambda_dir = synth["lambda_dir"]
    package = Path("syncer", "pipeline", "stream")
    sources = sorted(p.name for p in (REPO_ROOT / package).glob("*.py"))
    assert {"handler.py", "contract.py"} <= set(sources)
    assert sorted(p.name for p in (lambda_dir / package).glob("*.py")) == sources
    for name in sources:
        assert (lambda_dir / package / name).read_bytes() == (
            REPO_ROOT / package / name
        ).read_bytes()
    assert (lambda_dir / "syncer" / "__init__.py").read_text() == ""
    assert (lambda_dir / "syncer" / "pipeline" / "__init__.py").read_text() == ""
    assert "aws-lambda-powertools" in (lambda_dir / "requirements.txt").read_text()


# --- SQS ---------------------------------------------------------------------------------
def test_fifo_queue_redrives_to_fifo_dlq_with_worker_consistent_visibility(template, settings):
    # The deployed worker runs the base settings' limits (the test settings shorten them).
    from config.settings import base

    dlq_id = _logical_id(
        template, "AWS::SQS::Queue", QueueName=settings.SYNC_DLQ_NAME, FifoQueue=True
    )
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": settings.SYNC_QUEUE_NAME,
            "FifoQueue": True,
            # The app's own setting: longer than a task plus its longest retry delay.
            "VisibilityTimeout": base.SQS_VISIBILITY_TIMEOUT,
            "RedrivePolicy": {
                "deadLetterTargetArn": _getatt(dlq_id),
                "maxReceiveCount": settings.SQS_MAX_RECEIVE_COUNT,
            },
        },
    )
    assert (
        base.SQS_VISIBILITY_TIMEOUT >= base.CELERY_TASK_TIME_LIMIT + base.CELERY_RETRY_BACKOFF_MAX
    )


def test_outbox_and_reconcile_queues_have_dlqs_and_every_queue_is_encrypted(template, settings):
    for queue, dlq in (
        (settings.OUTBOX_QUEUE_NAME, settings.OUTBOX_DLQ_NAME),
        (settings.RECONCILE_QUEUE_NAME, settings.RECONCILE_DLQ_NAME),
    ):
        dlq_id = _logical_id(template, "AWS::SQS::Queue", QueueName=dlq)
        template.has_resource_properties(
            "AWS::SQS::Queue",
            {
                "QueueName": queue,
                "RedrivePolicy": {"deadLetterTargetArn": _getatt(dlq_id), "maxReceiveCount": 10},
            },
        )
    queues = _resources(template, "AWS::SQS::Queue")
    assert len(queues) == 7
    for lid, queue in queues.items():
        assert queue["Properties"].get("SqsManagedSseEnabled") is True, lid


# --- IAM ---------------------------------------------------------------------------------
def test_beat_only_sends_to_the_outbox_queue(template):
    role = _role_of(template, "BeatTaskRole")
    outbox_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-outbox")
    grants = _role_grants(template, role)
    assert grants and all(r == [_getatt(outbox_id)] for _, r in grants)
    assert set().union(*(a for a, _ in grants)) <= {
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    }


def test_no_statement_allows_everything(template):
    checked = 0
    for lid, _, st in _statements(template):
        if st["Effect"] != "Allow":
            continue
        checked += 1
        actions = _as_list(st["Action"])
        resources = _as_list(st.get("Resource", []))
        assert "*" not in actions, (lid, st)
        assert not any(a.endswith(":*") for a in actions), (lid, st)
        if "*" in resources:
            assert set(actions) <= STAR_RESOURCE_ALLOWED, (lid, st)
    assert checked > 10  # the walk really saw the policies


def test_handler_reads_the_stream_and_only_sends_to_the_queue(template):
    role = _role_of(template, "StreamHandlerServiceRole")
    table_id = _logical_id(template, "AWS::DynamoDB::Table", TableName="chef")
    sync_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-changes.fifo")
    grants = _role_grants(template, role)
    actions = set().union(*(a for a, _ in grants))
    assert actions >= STREAM_READS
    assert any(a >= STREAM_READS and r == [_getatt(table_id, "StreamArn")] for a, r in grants)
    assert any("sqs:SendMessage" in a and _getatt(sync_id) in r for a, r in grants)
    assert not actions & (TABLE_WRITES | CONSUME), actions & (TABLE_WRITES | CONSUME)


def test_worker_reads_writes_the_table_and_consumes_the_queues(template):
    role = _role_of(template, "WorkerTaskRole")
    table_id = _logical_id(template, "AWS::DynamoDB::Table", TableName="chef")
    sync_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-changes.fifo")
    outbox_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-outbox")
    reconcile_id = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-reconcile")
    grants = _role_grants(template, role)
    assert any(a >= TABLE_WRITES and r == [_getatt(table_id)] for a, r in grants)
    for queue_id in (sync_id, outbox_id, reconcile_id):
        assert any(a >= CONSUME and _getatt(queue_id) in r for a, r in grants), queue_id
    actions = set().union(*(a for a, _ in grants))
    assert not actions & STREAM_READS
    assert not any(a.startswith(("s3:", "secretsmanager:")) for a in actions)


# --- database ----------------------------------------------------------------------------
def test_aurora_serverless_v2_private_encrypted_with_secret(template):
    template.has_resource_properties(
        "AWS::RDS::DBCluster",
        {
            "Engine": "aurora-mysql",
            "StorageEncrypted": True,
            "ServerlessV2ScalingConfiguration": Match.object_like({"MinCapacity": 0.5}),
            "MasterUserPassword": Match.object_like(
                {"Fn::Join": Match.array_with([Match.array_with(["{{resolve:secretsmanager:"])])}
            ),
        },
    )
    template.resource_count_is("AWS::SecretsManager::SecretTargetAttachment", 1)
    instances = _resources(template, "AWS::RDS::DBInstance")
    assert instances
    for lid, inst in instances.items():
        assert inst["Properties"]["PubliclyAccessible"] is False, lid
        assert inst["Properties"]["DBInstanceClass"] == "db.serverless", lid
    # Subnet group: only isolated (no route to an internet gateway) subnets.
    group = next(iter(_resources(template, "AWS::RDS::DBSubnetGroup").values()))
    subnets = template.to_json()["Resources"]
    for ref in group["Properties"]["SubnetIds"]:
        subnet = subnets[ref["Ref"]]["Properties"]
        assert subnet["MapPublicIpOnLaunch"] is False
        tags = {t["Key"]: t["Value"] for t in subnet["Tags"]}
        assert tags["aws-cdk:subnet-type"] == "Isolated"


def test_cluster_parameters_let_migrate_create_the_capture_triggers(template):
    groups = _resources(template, "AWS::RDS::DBClusterParameterGroup")
    assert len(groups) == 1
    (gid, group) = next(iter(groups.items()))
    assert group["Properties"]["Parameters"]["log_bin_trust_function_creators"] == "1"
    assert group["Properties"]["Family"].startswith("aurora-mysql8")
    cluster = next(iter(_resources(template, "AWS::RDS::DBCluster").values()))
    assert cluster["Properties"]["DBClusterParameterGroupName"] == {"Ref": gid}


def test_database_accepts_mysql_only_from_the_app_security_group(template):
    cluster = next(iter(_resources(template, "AWS::RDS::DBCluster").values()))
    (db_sg,) = cluster["Properties"]["VpcSecurityGroupIds"]
    db_sg_id = db_sg["Fn::GetAtt"][0]
    sg = template.to_json()["Resources"][db_sg_id]["Properties"]
    assert not sg.get("SecurityGroupIngress"), "no inline (CIDR) ingress on the database"
    ingress = [
        r["Properties"]
        for r in _resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == db_sg
    ]
    app_sg = _getatt(
        _logical_id(
            template, "AWS::EC2::SecurityGroup", GroupDescription="backsync web, worker, release"
        ),
        "GroupId",
    )
    assert len(ingress) == 1, ingress
    assert ingress[0]["SourceSecurityGroupId"] == app_sg
    assert (ingress[0]["FromPort"], ingress[0]["ToPort"]) == (3306, 3306)


# --- static files, containers -------------------------------------------------------------
def test_static_bucket_is_private_and_encrypted(template):
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": Match.object_like(
                {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
                }
            ),
        },
    )


def _container(template: Template, name: str) -> dict:
    for res in _resources(template, "AWS::ECS::TaskDefinition").values():
        for c in res["Properties"]["ContainerDefinitions"]:
            if c["Name"] == name:
                return c
    raise AssertionError(f"no container {name}")


def test_web_and_worker_run_from_one_image_with_production_settings(template, synth):
    names = ("web", "worker", "beat", "release", "ops")
    web, worker, beat, release, ops = (_container(template, n) for n in names)
    assert web["Image"] == worker["Image"] == beat["Image"] == release["Image"] == ops["Image"]
    assert web["PortMappings"][0]["ContainerPort"] == 8000
    assert "Command" not in web  # the Dockerfile's CMD: gunicorn
    assert worker["Command"][:4] == ["celery", "-A", "config", "worker"]
    # The worker consumes all three queues: changes, outbox, and reconcile's own.
    assert "backsync-changes.fifo,backsync-outbox,backsync-reconcile" in worker["Command"]
    assert beat["Command"][:4] == ["celery", "-A", "config", "beat"]
    assert "manage.py migrate --noinput" in release["Command"][-1]
    for c in (web, worker, beat, release, ops):
        env = {e["Name"]: e["Value"] for e in c["Environment"]}
        assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert {"AWS_STORAGE_BUCKET_NAME", "SYNC_QUEUE_URL", "OUTBOX_QUEUE_URL"} <= env.keys()
        metrics = {"METRICS_TOKEN"} if c is web else set()
        assert {s["Name"] for s in c["Secrets"]} == {"SECRET_KEY", "DATABASE_SECRET"} | metrics
    for lid, svc in _resources(template, "AWS::ECS::Service").items():
        net = svc["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert net["AssignPublicIp"] == "DISABLED", lid
    # The image asset was staged from the repository root with the Dockerfile, no Docker.
    staged = [p for p in Path(synth["outdir"]).glob("asset.*") if (p / "Dockerfile").is_file()]
    assert len(staged) == 1
    assert not (staged[0] / ".venv").exists() and (staged[0] / "manage.py").is_file()


# --- images: pullable by every task, with and without imageUri (issue 15) -----------------
PSEUDO = {
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::Partition": "aws",
    "AWS::Region": "REGION",
    "AWS::AccountId": "ACCOUNT",
}


def _resolve(value) -> str:
    """A CloudFormation string expression with the pseudo parameters filled in."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in PSEUDO:
        return PSEUDO[value["Ref"]]
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_resolve(p) for p in parts)
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: PSEUDO[m.group(1)], value["Fn::Sub"])
    return json.dumps(value)  # something else (a resource reference): matches nothing


ECR_IMAGE = re.compile(
    r"^(?P<account>[^.]+)\.dkr\.ecr\.(?P<region>[^.]+)\.amazonaws\.com/(?P<repo>[^:@]+)[:@]"
)


def _task_definitions(template: Template) -> dict[str, dict]:
    return _resources(template, "AWS::ECS::TaskDefinition")


def test_every_task_definition_can_pull_its_image(either):
    template = either["template"]
    tasks = _task_definitions(template)
    assert len(tasks) == 5  # web, worker, beat, release, ops
    for lid, task in tasks.items():
        (container,) = task["Properties"]["ContainerDefinitions"]
        image = _resolve(container["Image"])
        match = ECR_IMAGE.match(image)
        assert match, (lid, image)
        repository_arn = (
            f"arn:aws:ecr:{match['region']}:{match['account']}:repository/{match['repo']}"
        )
        role = task["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0]
        grants = _role_grants(template, role)
        assert any(
            {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"} <= actions
            and repository_arn in {_resolve(r) for r in resources}
            for actions, resources in grants
        ), (lid, image, grants)
        assert any(
            "ecr:GetAuthorizationToken" in actions and resources == ["*"]
            for actions, resources in grants
        ), lid


def test_ci_images_are_the_ones_given(synth_ci):
    template = synth_ci["template"]
    images = {
        _container(template, n)["Name"]: _container(template, n)["Image"]
        for n in ("web", "worker", "beat", "release", "ops")
    }
    resolved = {name: _resolve(image) for name, image in images.items()}
    for name in ("web", "worker", "beat", "ops"):
        assert resolved[name] == CI_IMAGE, name
    assert resolved["release"] == CI_RELEASE_IMAGE


def test_a_ci_image_without_tag_is_refused(tmp_path):
    backsync_stack, _ = _deploy_module()
    with pytest.raises(ValueError, match="name a tag or a digest"):
        backsync_stack.make_app(
            {"lambdaDeps": "none", "imageUri": CI_IMAGE.rsplit(":", 1)[0]}, outdir=str(tmp_path)
        )


def test_image_is_built_for_linux_amd64_and_tasks_run_on_x86(synth, synth_ci):
    manifests = list(Path(synth["outdir"]).glob("*.assets.json"))
    assert manifests
    docker_images = [
        image
        for manifest in manifests
        for image in json.loads(manifest.read_text()).get("dockerImages", {}).values()
    ]
    assert len(docker_images) == 1
    assert docker_images[0]["source"]["platform"] == "linux/amd64"
    for built in (synth, synth_ci):
        for lid, task in _task_definitions(built["template"]).items():
            assert task["Properties"]["RuntimePlatform"] == {
                "CpuArchitecture": "X86_64",
                "OperatingSystemFamily": "LINUX",
            }, lid


def test_cdk_lower_bound_is_the_version_the_stack_needs():
    backsync_stack, _ = _deploy_module()
    text = (REPO_ROOT / "pyproject.toml").read_text()
    bound = re.search(r'"aws-cdk-lib>=([0-9.]+),', text).group(1)
    assert bound == backsync_stack.CDK_MIN_VERSION


def test_an_older_cdk_is_refused_before_synth(monkeypatch):
    _, app_module = _deploy_module()
    monkeypatch.setattr(app_module, "version", lambda name: "2.150.0")
    with pytest.raises(RuntimeError, match=r"aws-cdk-lib 2\.150\.0 is older than 2\.191\.0"):
        app_module.make_app({"lambdaDeps": "none"})


# --- the ops task: one-off manage.py commands (adoption, backfill, reconcile) ---------------
def test_ops_task_runs_the_worker_image_with_the_worker_role(either):
    template = either["template"]
    tasks = _task_definitions(template)
    by_container = {
        t["Properties"]["ContainerDefinitions"][0]["Name"]: (lid, t) for lid, t in tasks.items()
    }
    ops_id, ops = by_container["ops"]
    _, worker = by_container["worker"]
    ops_c, worker_c = _container(template, "ops"), _container(template, "worker")
    assert ops_c["Image"] == worker_c["Image"]
    assert ops["Properties"]["TaskRoleArn"] == worker["Properties"]["TaskRoleArn"]
    assert ops["Properties"]["TaskRoleArn"] == _getatt(_role_of(template, "WorkerTaskRole"))
    assert ops_c["Command"] == ["python", "manage.py", "reconcile"]
    assert ops_c["LogConfiguration"]["Options"]["awslogs-stream-prefix"] == "ops"
    assert {s["Name"] for s in ops_c["Secrets"]} == {"SECRET_KEY", "DATABASE_SECRET"}
    outputs = template.to_json()["Outputs"]
    assert outputs["OpsTaskDefinitionArn"]["Value"] == {"Ref": ops_id}


# --- environment: DLQ URLs, message groups, metrics ---------------------------------------
def _env(container: dict) -> dict:
    return {e["Name"]: e["Value"] for e in container["Environment"]}


def test_dlq_urls_and_message_groups_are_in_every_environment(either):
    template = either["template"]
    sync_dlq = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-changes-dlq.fifo")
    outbox_dlq = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-outbox-dlq")
    reconcile = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-reconcile")
    reconcile_dlq = _logical_id(template, "AWS::SQS::Queue", QueueName="backsync-reconcile-dlq")
    groups = either["context"].get("syncMessageGroups", "4")
    for name in ("web", "worker", "beat", "release", "ops"):
        env = _env(_container(template, name))
        assert env["SYNC_DLQ_URL"] == {"Ref": sync_dlq}, name
        assert env["OUTBOX_DLQ_URL"] == {"Ref": outbox_dlq}, name
        # Production settings require the reconcile queue's URL (its tasks route there).
        assert env["RECONCILE_QUEUE_URL"] == {"Ref": reconcile}, name
        assert env["RECONCILE_DLQ_URL"] == {"Ref": reconcile_dlq}, name
        assert env["SYNC_MESSAGE_GROUPS"] == groups, name
        assert env["CLOUDWATCH_METRICS"] == "true", name
    handler = next(iter(_resources(template, "AWS::Lambda::Function").values()))
    assert handler["Properties"]["Environment"]["Variables"]["SYNC_MESSAGE_GROUPS"] == groups


def test_metrics_token_secret_reaches_the_web_task_only(synth, synth_ci):
    web = _container(synth_ci["template"], "web")
    token = [s for s in web["Secrets"] if s["Name"] == "METRICS_TOKEN"]
    assert token == [{"Name": "METRICS_TOKEN", "ValueFrom": METRICS_TOKEN_ARN}]
    assert "METRICS_TOKEN" not in {
        s["Name"] for s in _container(synth_ci["template"], "worker")["Secrets"]
    }
    # Without the context, the stack generates one (test below).
    assert "METRICS_TOKEN" in {s["Name"] for s in _container(synth["template"], "web")["Secrets"]}


# --- load balancer health check ------------------------------------------------------------
def test_load_balancer_checks_liveness_on_healthz(either):
    either["template"].has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {
            "HealthCheckPath": "/healthz?scope=live",
            "Matcher": {"HttpCode": "200"},
        },
    )


# --- alarms, their topic, the dashboard ----------------------------------------------------
def _alarms(template: Template) -> dict[str, dict]:
    return {
        lid: res["Properties"]
        for lid, res in _resources(template, "AWS::CloudWatch::Alarm").items()
        if lid.startswith("MonitoringStack") or lid.startswith("Monitoring")
    }


def _alarm_on(template: Template, namespace: str, metric: str, **dimensions) -> dict:
    """The one alarm (not a scaling alarm) on this metric and these dimensions."""
    found = []
    for props in _alarms(template).values():
        dims = {d["Name"]: d["Value"] for d in props.get("Dimensions", [])}
        if (props.get("Namespace"), props.get("MetricName")) == (namespace, metric) and all(
            dims.get(k) == v for k, v in dimensions.items()
        ):
            found.append(props)
    assert len(found) == 1, (namespace, metric, dimensions, found)
    return found[0]


def _topic(template: Template) -> str:
    return _logical_id(template, "AWS::SNS::Topic", DisplayName="backsync alarms")


def _queue_name_dim(template: Template, name: str) -> dict:
    return _getatt(_logical_id(template, "AWS::SQS::Queue", QueueName=name), "QueueName")


def test_alarms_exist_with_metric_threshold_and_notification(either):
    from syncer.ops import cloudwatch

    template = either["template"]
    handler = {"Ref": next(iter(_resources(template, "AWS::Lambda::Function")))}
    cluster = {"Ref": next(iter(_resources(template, "AWS::RDS::DBCluster")))}
    max_acu = float(either["context"].get("dbMaxCapacity", 4))
    # (namespace, metric, dimensions, threshold, statistic)
    expected = [
        ("AWS/Lambda", "IteratorAge", {"FunctionName": handler}, 120_000, "Maximum"),
        ("AWS/Lambda", "Errors", {"FunctionName": handler}, 1, "Sum"),
        *(
            (
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                {"QueueName": _queue_name_dim(template, name)},
                1,
                "Maximum",
            )
            for name in (
                "backsync-stream-failures",
                "backsync-changes-dlq.fifo",
                "backsync-outbox-dlq",
                "backsync-reconcile-dlq",
            )
        ),
        (
            "AWS/SQS",
            "ApproximateAgeOfOldestMessage",
            {"QueueName": _queue_name_dim(template, "backsync-changes.fifo")},
            600,
            "Maximum",
        ),
        ("Backsync", cloudwatch.OUTBOX_BACKLOG, {}, 100, "Maximum"),
        ("Backsync", cloudwatch.OUTBOX_FAILED, {}, 1, "Maximum"),
        ("Backsync", cloudwatch.FAILED_CHANGES_OPEN, {}, 1, "Maximum"),
        (
            "AWS/RDS",
            "ServerlessDatabaseCapacity",
            {"DBClusterIdentifier": cluster},
            max_acu,
            "Maximum",
        ),
    ]
    topic = {"Ref": _topic(template)}
    for namespace, metric, dims, threshold, statistic in expected:
        alarm = _alarm_on(template, namespace, metric, **dims)
        assert alarm["Threshold"] == threshold, metric
        assert alarm["Statistic"] == statistic, metric
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", metric
        assert alarm["AlarmActions"] == [topic], metric
        assert alarm["OKActions"] == [topic], metric
    assert len(_alarms(template)) == len(expected)
    # A silent publisher (no beat, no worker: no outbox sweep either) is itself an alarm.
    backlog = _alarm_on(template, "Backsync", cloudwatch.OUTBOX_BACKLOG)
    assert backlog["TreatMissingData"] == "breaching"


def test_custom_metrics_are_the_ones_the_worker_publishes(template):
    from config.settings import base
    from syncer.ops import cloudwatch

    custom = {
        props["MetricName"]
        for props in _alarms(template).values()
        if props.get("Namespace") == "Backsync"
    }
    assert custom and custom <= cloudwatch.METRIC_NAMES
    body = json.dumps(
        next(iter(_resources(template, "AWS::CloudWatch::Dashboard").values()))["Properties"]
    )
    dashboard_names = set(re.findall(r'\\"Backsync\\",\\"(\w+)\\"', body))
    assert dashboard_names and dashboard_names <= cloudwatch.METRIC_NAMES
    worker = _env(_container(template, "worker"))
    assert worker["CLOUDWATCH_NAMESPACE"] == "Backsync" != base.CLOUDWATCH_NAMESPACE + "x"
    assert base.CLOUDWATCH_NAMESPACE == "Backsync"  # the app's default is the stack's
    # The worker may publish there, and only there.
    grants = [
        st
        for _, roles, st in _statements(template)
        if {"Ref": _role_of(template, "WorkerTaskRole")} in roles
        and "cloudwatch:PutMetricData" in _as_list(st["Action"])
    ]
    assert grants == [
        {
            "Action": "cloudwatch:PutMetricData",
            "Condition": {"StringEquals": {"cloudwatch:namespace": "Backsync"}},
            "Effect": "Allow",
            "Resource": "*",
        }
    ]


def test_topic_output_and_optional_email_subscription(synth, synth_ci):
    for built, subscriptions in ((synth, 0), (synth_ci, 1)):
        template = built["template"]
        topic = _topic(template)
        assert template.to_json()["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": topic}
        template.resource_count_is("AWS::SNS::Subscription", subscriptions)
    synth_ci["template"].has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "oncall@example.com", "TopicArn": {"Ref": topic}},
    )


def test_dashboard_shows_lag_throughput_failures_and_queue_depths(template):
    dashboards = _resources(template, "AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1
    body = json.dumps(next(iter(dashboards.values()))["Properties"]["DashboardBody"])
    for title in ("Lag", "Throughput", "Failures", "Queue depths", "Alarms"):
        assert f'\\"title\\":\\"{title}\\"' in body, title
    for metric in (
        "IteratorAge",
        "SyncLagP99",
        "ChangesApplied",
        "Errors",
        "FailedChangesOpen",
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    ):
        assert metric in body, metric


# --- worker autoscaling ------------------------------------------------------------------------
def test_worker_scales_on_the_change_queue_between_context_bounds(either):
    template = either["template"]
    low = int(either["context"].get("workerMinCount", 1))
    high = int(either["context"].get("workerMaxCount", 2))
    worker_service = _logical_id(
        template,
        "AWS::ECS::Service",
        TaskDefinition={
            "Ref": next(lid for lid in _task_definitions(template) if lid.startswith("WorkerTask"))
        },
    )
    targets = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    (target_id, target) = next(iter(targets.items()))
    assert len(targets) == 1
    props = target["Properties"]
    assert (props["MinCapacity"], props["MaxCapacity"]) == (low, high)
    assert props["ScalableDimension"] == "ecs:service:DesiredCount"
    assert worker_service in json.dumps(props["ResourceId"])
    policies = _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert {p["Properties"]["PolicyType"] for p in policies.values()} == {"StepScaling"}
    assert all(p["Properties"]["ScalingTargetId"] == {"Ref": target_id} for p in policies.values())
    steps = sorted(
        (
            a["ScalingAdjustment"],
            a.get("MetricIntervalLowerBound"),
            a.get("MetricIntervalUpperBound"),
        )
        for p in policies.values()
        for a in p["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    )
    assert [s[0] for s in steps] == [-1, 1, 2]
    # The scaling alarms watch the change queue's visible messages.
    scaling_alarms = [
        props
        for lid, res in _resources(template, "AWS::CloudWatch::Alarm").items()
        if (props := res["Properties"]).get("AlarmActions")
        and any("ScaleOnChangeBacklog" in json.dumps(a) for a in props["AlarmActions"])
    ]
    assert len(scaling_alarms) == 2
    sync_queue = _queue_name_dim(template, "backsync-changes.fifo")
    for alarm in scaling_alarms:
        assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
        assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": sync_queue}]
    service = _resources(template, "AWS::ECS::Service")[worker_service]["Properties"]
    assert service["DesiredCount"] == low


def test_message_groups_below_the_worker_processes_fail_synth(tmp_path):
    backsync_stack, _ = _deploy_module()
    # 3 tasks x 2 processes = 6 processes for 4 groups: two would idle.
    with pytest.raises(
        ValueError, match=r"syncMessageGroups \(SYNC_MESSAGE_GROUPS\) is 4.*6 worker"
    ):
        backsync_stack.make_app({"lambdaDeps": "none", "workerMaxCount": "3"}, outdir=str(tmp_path))
    with pytest.raises(ValueError, match="workerMinCount"):
        backsync_stack.make_app(
            {"lambdaDeps": "none", "workerMinCount": "3", "workerMaxCount": "2"},
            outdir=str(tmp_path),
        )
    with pytest.raises(ValueError, match="workerDesiredCount is gone"):
        backsync_stack.make_app(
            {"lambdaDeps": "none", "workerDesiredCount": "2"}, outdir=str(tmp_path)
        )


def test_metrics_token_is_a_generated_secret_given_to_web_only(template):
    secret_id = _logical_id(
        template, "AWS::SecretsManager::Secret", Description="backsync bearer token for /metrics"
    )
    generated = _resources(template, "AWS::SecretsManager::Secret")[secret_id]["Properties"]
    assert generated["GenerateSecretString"]["PasswordLength"] >= 32
    web = _container(template, "web")
    token = [s for s in web["Secrets"] if s["Name"] == "METRICS_TOKEN"]
    assert token == [{"Name": "METRICS_TOKEN", "ValueFrom": {"Ref": secret_id}}]
    # The web task's execution role may read it (ECS injects it at start).
    readers = [
        pid
        for pid, pol in _resources(template, "AWS::IAM::Policy").items()
        for st in pol["Properties"]["PolicyDocument"]["Statement"]
        if {"Ref": secret_id} in _as_list(st.get("Resource"))
        and "secretsmanager:GetSecretValue" in _as_list(st["Action"])
    ]
    assert len(readers) == 1 and readers[0].startswith("WebTaskDefExecutionRole")
    assert {"Ref": secret_id} == template.to_json()["Outputs"]["MetricsTokenSecretArn"]["Value"]
