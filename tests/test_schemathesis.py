"""schemathesis against the project's OpenAPI schema (/api/schema/), every operation.

The WSGI app is called in-process (same test database), DynamoDB is the moto server
(`aws`), requests carry a DRF token: a writer's, then a reader's (whose writes must all
be refused with 403). Checks: no 5xx, documented status codes and content
types, and every response body matching its schema. Both valid and invalid inputs are
generated. Examples per operation: SCHEMATHESIS_MAX_EXAMPLES (default 30).
"""

from __future__ import annotations

import os
from urllib.parse import unquote

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chefs.roles import READERS, WRITERS
from config.views import api_not_found
from config.wsgi import application
from tests.factories import user_with_roles

pytestmark = pytest.mark.fuzz

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(autouse=True)
def keep_test_connection(db, aws):
    """As Django's test client does: a request must not close the connection that holds
    the test's transaction (the app runs in this thread, on the test database)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(params=[WRITERS, READERS])
def role(request) -> str:
    return request.param


@pytest.fixture
def token(db, role) -> str:
    user = user_with_roles(role, username="fuzzer")
    return Token.objects.get_or_create(user=user)[0].key


def refused_unless_routed_elsewhere(response, case) -> None:
    """A reader's write is refused (403) before its body is even read; only a path that
    matches no route (e.g. a negative id) answers 404 instead."""
    if case.method.upper() not in WRITE_METHODS:
        return
    try:
        match = resolve(unquote(case.formatted_path))  # as the server sees it
    except Resolver404:
        match = None
    if match is None or match.func is api_not_found:  # the APIs' JSON 404 for any other path
        assert response.status_code == 404, response.status_code
    else:
        assert response.status_code == 403, (response.status_code, response.text[:200])


# Loaded at collection (schemathesis' from_fixture does not work with pytest 9); generating
# the schema needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case, token, role):
    response = case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
    if role == READERS:
        refused_unless_routed_elsewhere(response, case)
