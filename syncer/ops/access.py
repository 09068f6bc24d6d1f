"""Who may read the operational details: /metrics, and /healthz's list of failing parts.

Either the bearer token in METRICS_TOKEN (`Authorization: Bearer <token>`, what a
Prometheus scraper sends with `authorization: {credentials: ...}`), or a signed-in staff
user. With METRICS_TOKEN unset, only staff.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest


def _bearer(request: HttpRequest) -> str:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def ops_access_allowed(*, request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    offered = _bearer(request)
    # compare_digest: the comparison takes as long whatever prefix matches.
    if token and offered and hmac.compare_digest(offered.encode(), token.encode()):
        return True
    user = getattr(request, "user", None)
    try:
        # The session's user is read from MySQL: when it is down, /healthz must still answer.
        return bool(user and user.is_active and user.is_staff)
    except DatabaseError:
        return False
