import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(username="staff", is_staff=True, is_superuser=True)


@pytest.fixture
def api_client(user) -> APIClient:
    """A client authenticated with a DRF token, as API users are."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()


@pytest.fixture
def aws(moto_server):
    """A fresh, empty local AWS for one test: moto reset, then the tables and queues."""
    from syncer.aws import aws_resources_ensure

    moto_server.reset()
    return aws_resources_ensure()
