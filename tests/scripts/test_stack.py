"""`make up` / `make down` from a fresh clone: healthy stack, no duplicates, nothing left.

Runs the committed tree (a `git clone` of HEAD) with the existing virtualenv, on free ports
and its own database, with SERVICES="moto web" (worker and relay are covered by their own
end-to-end tests).
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from django.conf import settings

from tests.conftest import database_url, server_connection
from tests.plugins.aws import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"


def _http(method: str, url: str, body=None, token=None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def clone(tmp_path):
    stamps = sorted(VENV.glob(".installed-*"))
    if not stamps:
        pytest.skip("the virtualenv is not bootstrapped")
    target = tmp_path / "backsync"
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True)
    # Reuse the bootstrapped virtualenv: keep pyproject.toml older than its stamp so
    # `make setup` does not reinstall (it would repoint the editable install at the clone).
    old = stamps[0].stat().st_mtime - 60
    os.utime(target / "pyproject.toml", (old, old))
    return target


@pytest.fixture
def stack_env(clone):
    db_name = f"backsync_stack_{os.getpid()}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "DJANGO_", "DATABASE_", "PYTEST", "MAKE"))
    }
    env.update(
        VENV=str(VENV),
        BACKSYNC_BROWSER="0",
        SERVICES="moto web",
        MOTO_PORT=str(free_port()),
        WEB_PORT=str(free_port()),
        DATABASE_URL=database_url({**settings.DATABASES["default"], "NAME": db_name}),
        UP_TIMEOUT="60",
    )
    yield env
    subprocess.run(["make", "down"], cwd=clone, env=env, capture_output=True, timeout=120)
    conn = server_connection()
    conn.cursor().execute(f"DROP DATABASE IF EXISTS `{db_name}`")
    conn.close()


def _make(clone, env, target, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", target], cwd=clone, env=env, capture_output=True, text=True, timeout=timeout
    )


def _pids(clone) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in (clone / ".run").glob("*.pid")}


def test_up_twice_then_down_leaves_nothing(clone, stack_env):
    web = f"http://127.0.0.1:{stack_env['WEB_PORT']}"
    moto = f"http://127.0.0.1:{stack_env['MOTO_PORT']}"

    up = _make(clone, stack_env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"{web}/dynamo/chefs" in up.stdout and moto in up.stdout
    pids = _pids(clone)
    assert set(pids) == {"moto", "web"}
    assert all(_group_alive(pid) for pid in pids.values())

    # The walk-through: a token, POST, GET, and the INSERT on the table's stream.
    manage = [str(VENV / "bin" / "python"), "manage.py"]
    env = {**stack_env, "AWS_ENDPOINT_URL": moto}
    subprocess.run(
        [*manage, "shell", "-c", "from django.contrib.auth.models import Group, User;"
         "u = User.objects.create_user('demo', password='pw-demo-123');"
         "u.groups.add(Group.objects.get(name='writers'))"],
        cwd=clone, env=env, check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [*manage, "drf_create_token", "demo"], cwd=clone, env=env, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    token = re.search(r"token (\w+)", out).group(1)
    assert _http("GET", f"{web}/dynamo/chefs")[0] == 401
    status, body = _http("POST", f"{web}/dynamo/chefs", {"firstName": "Bobby"}, token)
    assert status == 201 and json.loads(body)["chefId"] == "Ramsay#Bobby"
    status, body = _http("GET", f"{web}/dynamo/chefs", token=token)
    assert [c["chefId"] for c in json.loads(body)] == ["Ramsay#Bobby"]
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    arn = session.client("dynamodb", endpoint_url=moto).describe_table(TableName="chef")["Table"][
        "LatestStreamArn"
    ]
    streams = session.client("dynamodbstreams", endpoint_url=moto)
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [r["eventName"] for r in records] == ["INSERT"]
    assert records[0]["dynamodb"]["Keys"] == {"ChefId": {"S": "Ramsay#Bobby"}}
    assert records[0]["dynamodb"]["NewImage"]["ChefId"] == {"S": "Ramsay#Bobby"}

    again = _make(clone, stack_env, "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "moto already running" in again.stdout and "web already running" in again.stdout
    assert _pids(clone) == pids

    down = _make(clone, stack_env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(_group_alive(pid) for pid in pids.values())
    assert _pids(clone) == {}
    assert not _port_open(int(stack_env["WEB_PORT"]))
    assert not _port_open(int(stack_env["MOTO_PORT"]))
    # A second down is harmless.
    assert _make(clone, stack_env, "down").returncode == 0


def test_failed_up_stops_what_it_started(clone, stack_env):
    # Something else holds the web port: up must fail and not leave moto running.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(stack_env["WEB_PORT"])))
        blocker.listen()
        up = _make(clone, stack_env, "up")
    assert up.returncode != 0
    assert "in use" in up.stdout + up.stderr
    deadline = time.monotonic() + 10
    while _port_open(int(stack_env["MOTO_PORT"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _port_open(int(stack_env["MOTO_PORT"]))
    assert _pids(clone) == {}


def test_down_without_up_is_harmless(clone, stack_env):
    result = _make(clone, stack_env, "down")
    assert result.returncode == 0
    assert not (clone / ".run").exists() or _pids(clone) == {}
    shutil.rmtree(clone / ".run", ignore_errors=True)


def test_up_writes_its_environment_and_manage_py_finds_the_stack(clone, stack_env):
    """On a non-default port, manage.py in a fresh shell reaches the stack's moto (not real
    AWS) through .run/env, and `source .run/env` gives a shell the same environment."""
    env = {**stack_env, "SERVICES": "moto"}
    moto = f"http://127.0.0.1:{stack_env['MOTO_PORT']}"
    up = _make(clone, env, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    env_file = clone / ".run" / "env"
    assert f"source {env_file}" in up.stdout
    assert f"export AWS_ENDPOINT_URL='{moto}'" in env_file.read_text()
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"

    # A new shell: no AWS_* variables, only the database (as a developer's .env would give).
    shell_env = {k: v for k, v in stack_env.items() if k not in {"MOTO_PORT", "WEB_PORT"}}
    python = str(VENV / "bin" / "python")
    setup = subprocess.run(
        [python, "manage.py", "dynamo_setup", "--dry-run"],
        cwd=clone, env=shell_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert setup.returncode == 0, setup.stdout + setup.stderr
    assert moto in setup.stdout and "table chef: unchanged" in setup.stdout
    sourced = subprocess.run(
        ["bash", "-c", f"source {env_file} && echo $AWS_ENDPOINT_URL $DATABASE_URL"],
        env=shell_env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sourced == [moto, stack_env["DATABASE_URL"]]

    assert _make(clone, env, "down").returncode == 0
    assert not env_file.exists()
