"""Production settings: required variables, `check --deploy`, static files on S3 (moto).

Each test runs Django in a subprocess with DJANGO_SETTINGS_MODULE=config.settings.production
so the settings are imported fresh from the environment the test gives them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import django
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_STATIC = Path(django.__file__).parent / "contrib" / "admin" / "static"
HOST = "backsync.example.com"
REQUIRED = (
    "SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "AWS_STORAGE_BUCKET_NAME",
    "SYNC_QUEUE_URL",
    "OUTBOX_QUEUE_URL",
    "RECONCILE_QUEUE_URL",
    "DATABASE_URL",
)
# Renders the admin login page as a browser would reach it (HTTPS behind the balancer).
RENDER_ADMIN_LOGIN = f"""
import django, json
django.setup()
from django.test import Client
r = Client().get("/admin/login/", secure=True, HTTP_HOST={HOST!r})
print(json.dumps({{"status": r.status_code, "html": r.content.decode()}}))
"""
DUMP_SETTINGS = """
import django, json
django.setup()
from django.conf import settings
print(json.dumps({
    "db": {
        k: settings.DATABASES["default"][k] for k in ("HOST", "PORT", "NAME", "USER", "PASSWORD")
    },
    "db_options": settings.DATABASES["default"]["OPTIONS"],
    "static_url": settings.STATIC_URL,
    "allowed_hosts": settings.ALLOWED_HOSTS,
    "debug": settings.DEBUG,
    "queues": settings.CELERY_BROKER_TRANSPORT_OPTIONS["predefined_queues"],
    "formatter": settings.LOGGING["handlers"]["console"]["formatter"],
}))
"""


def production_env(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": HOST,
            "AWS_STORAGE_BUCKET_NAME": "backsync-static-test",
            "SYNC_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/backsync-changes.fifo",
            "OUTBOX_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/backsync-outbox",
            "RECONCILE_QUEUE_URL": (
                "https://sqs.us-east-1.amazonaws.com/111122223333/backsync-reconcile"
            ),
            "DATABASE_URL": "mysql://root@127.0.0.1:3306/backsync",
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_required_environment():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_catches_an_insecure_setting():
    # The same check fails when HTTPS is switched off: the clean result above means something.
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        production_env(DJANGO_HTTPS="false"),
    )
    assert result.returncode != 0
    assert "security.W008" in result.stderr + result.stdout


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_required_variable_stops_startup_naming_it(name):
    result = run(["manage.py", "check"], production_env(**{name: None}))
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"Set the {name} environment variable" in result.stderr


def test_empty_allowed_hosts_is_refused():
    result = run(["manage.py", "check"], production_env(DJANGO_ALLOWED_HOSTS=""))
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS" in result.stderr


def test_database_secret_json_from_ecs_configures_mysql():
    secret = {
        "engine": "mysql",
        "host": "db.cluster-abc.us-east-1.rds.amazonaws.com",
        "port": 3306,
        "username": "backsync",
        "password": "p@ss:w/rd",  # characters a URL would need escaping for
        "dbname": "chefdb",
    }
    env = production_env(
        DATABASE_URL=None,
        DATABASE_SECRET=json.dumps(secret),
        AWS_S3_CUSTOM_DOMAIN="d111.cloudfront.net",
        LOG_JSON="true",
    )
    result = run(["-c", DUMP_SETTINGS], env)
    assert result.returncode == 0, result.stderr
    dumped = json.loads(result.stdout)
    assert dumped["db"] == {
        "HOST": secret["host"],
        "PORT": "3306",
        "NAME": "chefdb",
        "USER": "backsync",
        "PASSWORD": "p@ss:w/rd",
    }
    assert dumped["db_options"]["init_command"] == "SET sql_mode='STRICT_TRANS_TABLES'"
    assert dumped["static_url"] == "https://d111.cloudfront.net/static/"
    assert dumped["allowed_hosts"] == [HOST]
    assert dumped["debug"] is False
    assert dumped["queues"]["backsync-changes.fifo"]["url"] == env["SYNC_QUEUE_URL"]
    assert dumped["formatter"] == "json"


def test_malformed_database_secret_names_the_variable():
    env = production_env(DATABASE_URL=None, DATABASE_SECRET='{"host": "x"}')
    result = run(["manage.py", "check"], env)
    assert result.returncode != 0
    assert "DATABASE_SECRET" in result.stderr


def test_collectstatic_uploads_to_s3_and_admin_links_the_bucket(moto_server):
    bucket = f"backsync-static-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    env = production_env(AWS_STORAGE_BUCKET_NAME=bucket, AWS_ENDPOINT_URL=moto_server.url)

    result = run(["manage.py", "collectstatic", "--noinput"], env)
    assert result.returncode == 0, result.stderr
    keys = {
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    }
    assert "static/admin/css/base.css" in keys
    stored = s3.get_object(Bucket=bucket, Key="static/admin/css/base.css")["Body"].read()
    assert stored == (ADMIN_STATIC / "admin" / "css" / "base.css").read_bytes()

    result = run(["-c", RENDER_ADMIN_LOGIN], env)
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert page["status"] == 200
    links = re.findall(r'(?:href|src)="([^"]+/admin/(?:css|js)/[^"]+)"', page["html"])
    assert any(link.endswith("/admin/css/base.css") for link in links), links
    prefix = f"{moto_server.url}/{bucket}/static/"
    for link in links:
        assert link.startswith(prefix), link
        # Each link names an object in the bucket holding the file collectstatic uploaded.
        # (The bucket is private: in AWS CloudFront reads it; here the test reads it.)
        relative = link.removeprefix(prefix).split("?", 1)[0]
        body = s3.get_object(Bucket=bucket, Key=f"static/{relative}")["Body"].read()
        assert body == (ADMIN_STATIC / relative).read_bytes()
