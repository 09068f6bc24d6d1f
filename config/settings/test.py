"""Test run: real MariaDB (pytest-django creates its own test database), fast hashing."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="test-insecure-secret-key")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A second mapped model that exists only in tests (tests/testapp).
INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]  # noqa: F405

# One test database per pytest process, so parallel runs on one server don't collide.
DATABASES["default"]["TEST"]["NAME"] = env(  # noqa: F405
    "TEST_DATABASE_NAME", default=f"test_backsync_{__import__('os').getpid()}"
)

# Short limits, so that a message held by a killed worker comes back (SQS visibility
# timeout) within a test's patience; still longer than a task plus its retry delay.
CELERY_TASK_TIME_LIMIT = 20
CELERY_TASK_SOFT_TIME_LIMIT = 15
CELERY_RETRY_BACKOFF_MAX = 5
SQS_VISIBILITY_TIMEOUT = env.int("SQS_VISIBILITY_TIMEOUT", default=30)
CELERY_BROKER_TRANSPORT_OPTIONS = {  # noqa: F405
    **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
    "visibility_timeout": SQS_VISIBILITY_TIMEOUT,
}

# /metrics and /healthz details (syncer.ops.access); tests send it as a bearer token.
METRICS_TOKEN = env("METRICS_TOKEN", default="test-metrics-token")

# The suite makes many requests per user (schemathesis): throttle tests set their own rates.
REST_FRAMEWORK = {  # noqa: F405
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {"anon": "100000/minute", "user": "100000/minute"},
}
