"""API tokens and the metrics token never appear in logs."""

from __future__ import annotations

import io
import logging

import pytest
from django.conf import settings
from django.core.cache import cache
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chefs.roles import READERS
from tests.factories import user_with_roles

pytestmark = pytest.mark.django_db


@pytest.fixture
def unfiltered_logs():
    """Take the redaction off the configured handlers: it changes records in place, so
    caplog would see them redacted. This test checks that nothing logs a token at all."""
    from config.logging import RedactCredentialsFilter

    removed = []
    for handler in logging.getLogger().handlers:
        for f in list(handler.filters):
            if isinstance(f, RedactCredentialsFilter):
                handler.removeFilter(f)
                removed.append((handler, f))
    assert removed
    yield
    for handler, f in removed:
        handler.addFilter(f)


def test_requests_log_no_token(caplog, settings, unfiltered_logs):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "1/minute", "anon": "1/minute"},
    }
    cache.clear()
    key = Token.objects.create(user=user_with_roles(READERS, username="reader")).key
    client = APIClient()
    caplog.set_level(logging.DEBUG)
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    codes = [
        client.get("/aurora/chefs").status_code,  # 200
        client.post("/aurora/chefs", {}, format="json").status_code,  # 403 (not counted)
        client.get("/aurora/chefs").status_code,  # 429
    ]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key[:-1]}x")
    codes.append(client.get("/aurora/chefs").status_code)  # 401
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}")
    codes.append(client.get("/metrics").status_code)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}x")
    codes.append(client.get("/metrics").status_code)
    cache.clear()
    assert codes == [200, 403, 429, 401, 200, 401]
    assert caplog.records  # the 4xx answers were logged (django.request)
    for record in caplog.records:
        text = f"{record.getMessage()} {vars(record)}"
        assert key[:-1] not in text and settings.METRICS_TOKEN not in text


def _console_copy() -> tuple[logging.Handler, io.StringIO]:
    """A handler with the configured console handler's filters and formatter."""
    console = next(h for h in logging.getLogger().handlers if h.get_name() == "console")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(console.formatter)
    for f in console.filters:
        handler.addFilter(f)
    return handler, out


@pytest.mark.parametrize("json_lines", [False, True])
def test_configured_log_lines_redact_credentials(json_lines):
    from config.logging import JsonFormatter

    key = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    handler, out = _console_copy()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.token_logging")
    log.addHandler(handler)
    try:
        log.warning("headers: {'Authorization': 'Token %s'}", key)
        log.warning("scrape", extra={"auth": f"Bearer {settings.METRICS_TOKEN}"})
        try:
            raise ValueError(f"bad header Token {key}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert key not in text and settings.METRICS_TOKEN not in text
    # Both formats show the extra fields (text lines as name=value), redacted too.
    assert text.count("[redacted]") == 3
