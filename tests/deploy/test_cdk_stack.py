"""Synthesise the CDK app (offline, no Docker, no AWS account) and check what matters."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("aws_cdk", reason="needs the deploy extra (aws-cdk-lib)")

from aws_cdk.assertions import Match, Template  # noqa: E402

pytestmark = pytest.mark.deploy

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
# Actions that have no resource-level permissions, so "*" is the only possible resource.
STAR_RESOURCE_ALLOWED = {"dynamodb:ListStreams", "ecr:GetAuthorizationToken"}
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


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """One synthesis for the whole module (about 10 s)."""
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    sys.path.insert(0, str(DEPLOY_DIR))
    try:
        from backsync_stack import make_app
        from backsync_stack.app import LAMBDA_BUILD_DIR
    finally:
        sys.path.remove(str(DEPLOY_DIR))
    outdir = tmp_path_factory.mktemp("cdk.out")
    # No imageUri: the image is the repository's Dockerfile as an asset, which proves that
    # synthesis stages it without Docker. lambdaDeps=none keeps synthesis offline.
    app, stack = make_app({"lambdaDeps": "none"}, outdir=str(outdir))
    app.synth()
    return {
        "template": Template.from_stack(stack),
        "stack": stack,
        "outdir": outdir,
        "lambda_dir": LAMBDA_BUILD_DIR,
    }


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
            "BatchSize": 100,
            "MaximumBatchingWindowInSeconds": 1,
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
            "Handler": "syncer.stream_handler.handler",
            "Environment": {"Variables": Match.object_like({"SYNC_QUEUE_URL": {"Ref": sync_id}})},
        },
    )
    # The asset is the project's own code, copied unchanged, with no Django package init.
    lambda_dir = synth["lambda_dir"]
    for name in ("stream_handler.py", "changes.py"):
        assert (lambda_dir / "syncer" / name).read_bytes() == (
            REPO_ROOT / "syncer" / name
        ).read_bytes()
    assert (lambda_dir / "syncer" / "__init__.py").read_text() == ""
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


def test_outbox_queue_has_dlq_and_every_queue_is_encrypted(template, settings):
    dlq_id = _logical_id(template, "AWS::SQS::Queue", QueueName=settings.OUTBOX_DLQ_NAME)
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": settings.OUTBOX_QUEUE_NAME,
            "RedrivePolicy": {"deadLetterTargetArn": _getatt(dlq_id), "maxReceiveCount": 10},
        },
    )
    queues = _resources(template, "AWS::SQS::Queue")
    assert len(queues) == 5
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
    grants = _role_grants(template, role)
    assert any(a >= TABLE_WRITES and r == [_getatt(table_id)] for a, r in grants)
    for queue_id in (sync_id, outbox_id):
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
    names = ("web", "worker", "beat", "release")
    web, worker, beat, release = (_container(template, n) for n in names)
    assert web["Image"] == worker["Image"] == beat["Image"] == release["Image"]
    assert web["PortMappings"][0]["ContainerPort"] == 8000
    assert "Command" not in web  # the Dockerfile's CMD: gunicorn
    assert worker["Command"][:4] == ["celery", "-A", "config", "worker"]
    assert "backsync-changes.fifo,backsync-outbox" in worker["Command"]
    assert beat["Command"][:4] == ["celery", "-A", "config", "beat"]
    assert "manage.py migrate --noinput" in release["Command"][-1]
    for c in (web, worker, beat, release):
        env = {e["Name"]: e["Value"] for e in c["Environment"]}
        assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert {"AWS_STORAGE_BUCKET_NAME", "SYNC_QUEUE_URL", "OUTBOX_QUEUE_URL"} <= env.keys()
        assert {s["Name"] for s in c["Secrets"]} == {"SECRET_KEY", "DATABASE_SECRET"}
    for lid, svc in _resources(template, "AWS::ECS::Service").items():
        net = svc["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]
        assert net["AssignPublicIp"] == "DISABLED", lid
    # The image asset was staged from the repository root with the Dockerfile, no Docker.
    staged = [p for p in Path(synth["outdir"]).glob("asset.*") if (p / "Dockerfile").is_file()]
    assert len(staged) == 1
    assert not (staged[0] / ".venv").exists() and (staged[0] / "manage.py").is_file()
