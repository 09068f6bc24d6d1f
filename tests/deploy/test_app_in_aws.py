"""What the stack relies on in the app: the load balancer's liveness check and DLQ URLs."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.db import DatabaseError
from django.test import override_settings

from syncer.ops import dashboard, health
from tests.deploy.test_production_settings import production_env, run
from tests.plugins.aws import free_port

TASK_IP = "10.0.3.17"
LIVENESS = "/healthz?scope=live"
# The load balancer's request: plain HTTP to the task's IP, no X-Forwarded-Proto.
LB_HEALTH_CHECK = f"""
import django, json
django.setup()
from django.test import Client
r = Client().get({LIVENESS!r}, HTTP_HOST={TASK_IP!r})
print(json.dumps({{"status": r.status_code, "location": r.get("Location", "")}}))
"""


@pytest.mark.django_db
def test_liveness_stays_up_while_every_dependency_is_down(client, monkeypatch):
    def broken():
        raise DatabaseError('(2003, "Can\'t connect to MySQL server")')

    monkeypatch.setitem(health.CHECKS, "database", broken)
    with override_settings(AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}"):
        ready = client.get("/healthz", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
        live = client.get(LIVENESS)
    assert ready.status_code == 503
    assert set(ready.json()["failed"]) == {"database", "dynamodb", "sqs"}
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}  # public: no details


def test_unknown_health_scope_is_a_400(client):
    r = client.get("/healthz?scope=everything")
    assert r.status_code == 400
    assert "scope" in r.json()["errors"]


def test_load_balancer_health_check_gets_200_over_plain_http_in_production():
    # HTTPS on (a certificate), the task's IP among the allowed hosts (from ECS metadata
    # in AWS): the check must get its answer, not the redirect every other path gets.
    env = production_env(DJANGO_ALLOWED_HOSTS=f"backsync.example.com,{TASK_IP}")
    result = run(["-c", LB_HEALTH_CHECK], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": 200, "location": ""}
    other = run(["-c", LB_HEALTH_CHECK.replace(LIVENESS, "/admin/login/")], env)
    assert json.loads(other.stdout)["status"] == 301


@pytest.mark.django_db
def test_dashboard_reads_dlq_depths_by_the_url_the_stack_passes(aws):
    # The web role has no sqs:GetQueueUrl: with the URL set, the name is never looked up
    # (a name that does not exist proves it).
    from syncer.aws import sqs_client

    sqs_client().send_message(QueueUrl=_url(settings.OUTBOX_DLQ_NAME), MessageBody="dead")
    with override_settings(
        SYNC_DLQ_URL=_url(settings.SYNC_DLQ_NAME),
        SYNC_DLQ_NAME="no-such-queue.fifo",
        OUTBOX_DLQ_URL=_url(settings.OUTBOX_DLQ_NAME),
        OUTBOX_DLQ_NAME="no-such-queue",
    ):
        depths = {q.label: q for q in dashboard.queue_depths_get()}
    assert depths["sync dead-letter queue"].visible == 0, depths
    assert depths["outbox dead-letter queue"].visible == 1, depths


def _url(name: str) -> str:
    from syncer.aws import sqs_client

    return sqs_client().get_queue_url(QueueName=name)["QueueUrl"]
