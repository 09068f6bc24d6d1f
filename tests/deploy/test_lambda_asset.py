"""The stream handler's Lambda asset, built as a deploy builds it, runs on its own.

The asset gets its dependencies from pip (manylinux wheels for the Lambda's Python 3.12, as
`cdk deploy` installs them); the handler then runs in a Python 3.12 subprocess whose
`sys.path` is the asset folder and the standard library only (`-I -S`: no site-packages,
no PYTHONPATH), against moto, with a Lambda-shaped event of real stream records. A real
Celery worker applies what the handler sent, and MySQL ends as DynamoDB is.

Skipped with a reason where the package registry cannot be reached or no Python 3.12 is
installed.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from django.conf import settings

from syncer.local.records import lambda_record
from tests.procs import wait_until
from tests.stores import dynamo_rows, mysql_rows, stream_records

pytestmark = [pytest.mark.deploy, pytest.mark.e2e]

REPO_ROOT = Path(__file__).resolve().parents[2]
NETWORK_ERRORS = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "Connection refused",
    "ConnectTimeoutError",
    "ProxyError",
    "No matching distribution found",  # what pip says when no index answered
)
RUN_HANDLER = """
import json, sys
asset = sys.argv[1]
sys.path.insert(0, asset)
# Nothing outside the asset but the standard library (-I -S left no site-packages).
assert not [p for p in sys.path if "site-packages" in p], sys.path
from syncer.pipeline.stream.handler import handler
import boto3, celery, kombu, aws_lambda_powertools
own = sys.modules["syncer.pipeline.stream.handler"]
for module in (boto3, celery, kombu, aws_lambda_powertools, own):
    assert module.__file__.startswith(asset), module.__file__
event = json.load(sys.stdin)
print(json.dumps({"response": handler(event, None), "version": list(sys.version_info[:2])}))
"""


def _lambda_python() -> str | None:
    """A Python of the Lambda runtime's version (3.12): LAMBDA_PYTHON, pyenv, or PATH."""
    from backsync_stack.lambda_asset import LAMBDA_PYTHON_VERSION

    wanted = LAMBDA_PYTHON_VERSION
    candidates = [os.environ.get("LAMBDA_PYTHON", "")]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{wanted}*/bin/python3")))
    candidates += [shutil.which(f"python{wanted}") or "", sys.executable]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == wanted:
            return candidate
    return None


@pytest.fixture(scope="module")
def lambda_asset(tmp_path_factory) -> tuple[Path, str]:
    sys.path.insert(0, str(REPO_ROOT / "deploy"))
    try:
        from backsync_stack.lambda_asset import LambdaAssetError, build_lambda_asset

        python = _lambda_python()
    finally:
        sys.path.remove(str(REPO_ROOT / "deploy"))
    if python is None:
        pytest.skip("no Python 3.12 (the Lambda runtime) on this machine; set LAMBDA_PYTHON")
    out = tmp_path_factory.mktemp("lambda")
    try:
        asset = build_lambda_asset(repo_root=REPO_ROOT, out_dir=out / "asset", install_deps=True)
    except LambdaAssetError as exc:
        if any(marker in str(exc) for marker in NETWORK_ERRORS):
            pytest.skip(f"package registry unreachable: {str(exc).strip().splitlines()[-1]}")
        raise
    return asset, python


def test_asset_holds_the_handler_and_its_dependencies(lambda_asset):
    asset, _ = lambda_asset
    handler = Path("syncer", "pipeline", "stream", "handler.py")
    assert (asset / handler).read_bytes() == (REPO_ROOT / handler).read_bytes()
    for package in ("celery", "kombu", "boto3", "botocore", "aws_lambda_powertools"):
        assert (asset / package / "__init__.py").is_file(), package
    assert not (asset / "django").exists()  # the Lambda has no Django
    # Wheels for the Lambda's platform, not this machine's interpreter.
    compiled = [p.name for p in asset.rglob("*.so")]
    assert all(
        "cpython-312" in name or "abi3" in name or "cpython" not in name for name in compiled
    )


def test_handler_from_the_asset_alone_feeds_a_real_worker(lambda_asset, worker, stack_env):
    asset, python = lambda_asset
    ddb = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    table = settings.DYNAMO_CHEF_TABLE
    for first, last in (("Alton", "Brown"), ("Bobby", "Flay"), ("Ina", "Garten")):
        ddb.put_item(
            TableName=table,
            Item={
                "ChefId": {"S": f"{last}#{first}"},
                "firstName": {"S": first},
                "lastName": {"S": last},
            },
        )
    ddb.update_item(
        TableName=table,
        Key={"ChefId": {"S": "Flay#Bobby"}},
        UpdateExpression="SET firstName = :f",
        ExpressionAttributeValues={":f": {"S": "Robert"}},
    )
    ddb.delete_item(TableName=table, Key={"ChefId": {"S": "Garten#Ina"}})

    stream_arn = ddb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    event = {
        "Records": [
            lambda_record(raw, stream_arn=stream_arn, region=settings.AWS_REGION)
            for raw in stream_records()
        ]
    }
    assert {r["eventName"] for r in event["Records"]} == {"INSERT", "MODIFY", "REMOVE"}
    # The Lambda's environment as the stack sets it, pointed at moto; nothing inherited.
    env = {
        "SYNC_QUEUE_URL": settings.SYNC_QUEUE_URL,
        "SYNC_QUEUE_NAME": settings.SYNC_QUEUE_NAME,
        "SYNC_MESSAGE_GROUPS": str(settings.SYNC_MESSAGE_GROUPS),
        "POWERTOOLS_SERVICE_NAME": "backsync-stream-handler",
        "AWS_REGION": settings.AWS_REGION,
        "AWS_ENDPOINT_URL": settings.AWS_ENDPOINT_URL,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "PATH": os.environ.get("PATH", ""),
    }
    result = subprocess.run(
        [python, "-I", "-S", "-c", RUN_HANDLER, str(asset)],
        input=json.dumps(event),
        env=env,
        cwd=asset.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["version"] == [3, 12]
    assert out["response"] == {"batchItemFailures": []}

    expected = dynamo_rows()
    assert expected == {"Brown#Alton": ("Alton", "Brown"), "Flay#Bobby": ("Robert", "Flay")}
    wait_until(
        lambda: {k: v for k, v in mysql_rows().items() if k} == expected,
        timeout=90,
        what=f"MySQL to match DynamoDB {expected}",
    )
