"""Lock a user name out of password login after repeated failures (admin login).

After LOGIN_FAILURE_LIMIT failed attempts in a row for one user name, every further
attempt for it, even with the right password, is refused until LOGIN_LOCKOUT_SECONDS have
passed since the last failure; a successful login resets the count. User names that do not
exist count too, so the answer tells nothing about which exist. Counters live in the
default cache (per process with the local-memory cache: set CACHE_URL to a shared cache).
"""

from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

logger = logging.getLogger(__name__)


def _cache_key(username: str) -> str:
    # Hashed: any user name is a valid cache key, and none is kept in clear.
    return "login-failures:" + hashlib.sha256(username.strip().lower().encode()).hexdigest()


def login_failures(*, username: str) -> int:
    return cache.get(_cache_key(username), 0)


def login_locked(*, username: str) -> bool:
    return login_failures(username=username) >= settings.LOGIN_FAILURE_LIMIT


def login_failure_record(*, username: str) -> int:
    key = _cache_key(username)
    failures = cache.get(key, 0) + 1
    # Re-set with a fresh timeout: the lockout runs from the last failure.
    cache.set(key, failures, timeout=settings.LOGIN_LOCKOUT_SECONDS)
    return failures


def login_failures_reset(*, username: str) -> None:
    cache.delete(_cache_key(username))


class LockoutModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self._username_field())
        if not username:
            return super().authenticate(request, username=username, password=password, **kwargs)
        if login_locked(username=username):
            login_failure_record(username=username)
            logger.warning("login refused: user name locked out after repeated failures")
            # Stops Django's authenticate(): no other backend is tried.
            raise PermissionDenied("locked out")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            failures = login_failure_record(username=username)
            if failures >= settings.LOGIN_FAILURE_LIMIT:
                logger.warning("login locked out after %d failures in a row", failures)
        else:
            login_failures_reset(username=username)
        return user

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD
