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
