"""API request rates (DRF throttles), per user and per anonymous client address.

DRF's own classes read the rates once, at import; these read REST_FRAMEWORK's
DEFAULT_THROTTLE_RATES on every request, so the settings (and tests) rule. A throttled
request gets 429 with Retry-After (seconds). Counters live in the default cache.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class _SettingsRate:
    scope: str

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class UserThrottle(_SettingsRate, UserRateThrottle):
    """Per authenticated user (anonymous requests: per address, same rate)."""


class AnonThrottle(_SettingsRate, AnonRateThrottle):
    """Anonymous requests, per client address (the schema and docs pages)."""
