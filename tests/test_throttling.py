"""API throttles (429 with Retry-After) and the admin login lockout."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from chefs.roles import READERS
from config import login_lockout
from tests.factories import user_with_roles

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-1"  # tests/factories.py


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def rates(settings):
    def set_rates(*, user: str = "1000/minute", anon: str = "1000/minute") -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"user": user, "anon": anon},
        }

    return set_rates


def reader_client(username: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(user_with_roles(READERS, username=username))
    return client


def test_user_throttle_answers_429_with_retry_after(rates):
    rates(user="3/minute")
    alice, bob = reader_client("alice"), reader_client("bob")
    assert [alice.get("/aurora/chefs").status_code for _ in range(3)] == [200] * 3
    r = alice.get("/aurora/chefs")
    assert r.status_code == 429
    assert 0 < int(r["Retry-After"]) <= 60
    # Per user: another user still has his own budget.
    assert bob.get("/aurora/chefs").status_code == 200


def test_anonymous_throttle(rates):
    rates(anon="2/minute")
    client = APIClient()
    codes = [client.get("/api/schema/").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_rates_come_from_settings(rates):
    rates(user="1000/minute")
    alice = reader_client("alice")
    assert {alice.get("/aurora/chefs").status_code for _ in range(10)} == {200}


# --- admin login lockout --------------------------------------------------------------------


def login(client, username: str, password: str) -> bool:
    client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return "_auth_user_id" in client.session


@pytest.fixture
def staff():
    return user_with_roles(username="ops", is_staff=True)


def test_sixth_attempt_in_a_row_is_refused_even_with_the_right_password(client, staff):
    assert [login(client, "ops", "wrong") for _ in range(5)] == [False] * 5
    assert not login(client, "ops", "wrong")  # the sixth bad password
    assert not login(client, "ops", PASSWORD)  # and the right one, while locked


def test_lockout_ends_after_its_time(client, staff):
    for _ in range(5):
        login(client, "ops", "wrong")
    assert not login(client, "ops", PASSWORD)
    # What the cache does when LOGIN_LOCKOUT_SECONDS have passed since the last failure.
    cache.delete(login_lockout._cache_key("ops"))
    assert login(client, "ops", PASSWORD)


def test_a_success_resets_the_count(client, staff):
    for _ in range(4):
        login(client, "ops", "wrong")
    assert login(client, "ops", PASSWORD)
    client.logout()
    for _ in range(4):
        login(client, "ops", "wrong")
    assert login(client, "ops", PASSWORD)


def test_lockout_is_per_user_name(client, staff):
    user_with_roles(username="other", is_staff=True)
    for _ in range(5):
        login(client, "OPS", "wrong")  # user names compare case-insensitively here
    assert not login(client, "ops", PASSWORD)
    assert login(client, "other", PASSWORD)


def test_lockout_limit_from_settings(client, staff, settings):
    settings.LOGIN_FAILURE_LIMIT = 2
    login(client, "ops", "wrong")
    login(client, "ops", "wrong")
    assert not login(client, "ops", PASSWORD)
