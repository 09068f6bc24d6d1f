"""OpenAPI schema post-processing: the answers every authenticated API operation can give.

The views declare their own responses; these come from authentication, the role
permissions (chefs/api/permissions.py) and the throttles (config/throttling.py), so they
are added here once rather than on every view.
"""

from __future__ import annotations

_DETAIL = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"detail": {"type": "string"}},
                "required": ["detail"],
            }
        }
    }
}
COMMON_RESPONSES = {
    "401": {"description": "Not authenticated (no or an invalid token).", **_DETAIL},
    "403": {"description": "Authenticated, but the user's roles do not allow it.", **_DETAIL},
    "429": {
        "description": "Throttled; retry after the Retry-After header's seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        **_DETAIL,
    },
}
_METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def add_common_responses(result, generator, request, public):
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS:
                continue
            security = operation.get("security", [])
            # `{}` in security: the operation allows anonymous requests (no 401/403).
            needs_auth = bool(security) and {} not in security
            codes = ("401", "403", "429") if needs_auth else ("429",)
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, COMMON_RESPONSES[code])
    return result
