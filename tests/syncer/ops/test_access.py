"""/metrics needs the metrics token (or a staff session); /healthz tells the public only
ok or unavailable."""

from __future__ import annotations

import pytest
from django.test import override_settings

from syncer.ops import health
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), bearer(TOKEN[:-1]), bearer(""), {"HTTP_AUTHORIZATION": f"Token {TOKEN}"}],
    ids=["none", "wrong", "prefix", "empty", "other-scheme"],
)
def test_metrics_refuse_without_the_token(client, headers):
    r = client.get("/metrics", **headers)
    assert r.status_code == 401
    assert r["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"backsync_" not in r.content


def test_metrics_with_the_token(client):
    r = client.get("/metrics", **bearer(TOKEN))
    assert r.status_code == 200
    assert b"backsync_changes_applied_total" in r.content


def test_metrics_for_staff_sessions_only(client):
    client.force_login(UserFactory(username="plain"))
    assert client.get("/metrics").status_code == 401
    client.force_login(UserFactory(username="ops", is_staff=True))
    assert client.get("/metrics").status_code == 200


def test_metrics_without_a_configured_token_refuse_an_empty_bearer(client):
    with override_settings(METRICS_TOKEN=""):
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
        assert client.get("/metrics", **bearer(TOKEN)).status_code == 401


def _broken():
    raise health.DatabaseError("(2003, \"Can't connect to MySQL server on 'db.internal'\")")


@pytest.mark.parametrize("failing", [False, True])
def test_healthz_public_answer_is_only_the_status(client, aws, monkeypatch, failing):
    if failing:
        monkeypatch.setitem(health.CHECKS, "database", _broken)
    r = client.get("/healthz")
    assert r.status_code == (503 if failing else 200)
    assert r.json() == {"status": "unavailable" if failing else "ok"}


@pytest.mark.parametrize("how", ["token", "staff"])
def test_healthz_details_with_the_token_or_for_staff(client, aws, monkeypatch, how):
    monkeypatch.setitem(health.CHECKS, "database", _broken)
    headers = bearer(TOKEN) if how == "token" else {}
    if how == "staff":
        client.force_login(UserFactory(username="ops", is_staff=True))
    r = client.get("/healthz", **headers)
    assert r.status_code == 503
    assert r.json()["failed"] == ["database"]
    assert "db.internal" in r.json()["checks"]["database"]["error"]
