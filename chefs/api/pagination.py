"""Pagination that keeps the legacy response shape (a bare JSON list).

Legacy clients expect a JSON array, so the page links travel in an RFC 8288 `Link`
header (rel="next" / rel="prev") and the total in `X-Total-Count`, as GitHub's API does.
"""

import base64
import binascii
import json
from collections.abc import Iterable

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination, _positive_int
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils.urls import replace_query_param


def link_header(links: dict[str, str | None]) -> str:
    return ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items() if url)


def page_size_from_query(request, *, param: str, default: int, maximum: int) -> int:
    """The page size asked for: a positive integer, at most `maximum` (larger is cut);
    anything else is a 400 (DRF would silently fall back to the default)."""
    raw = request.query_params.get(param)
    if raw is None:
        return default
    try:
        return _positive_int(raw, strict=True, cutoff=maximum)
    except ValueError:
        raise ValidationError({param: ["A positive integer is required."]}) from None


class LinkHeaderPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request) -> int:
        return page_size_from_query(
            request,
            param=self.page_size_query_param,
            default=self.page_size,
            maximum=self.max_page_size,
        )

    def get_paginated_response(self, data) -> Response:
        headers = {"X-Total-Count": str(self.page.paginator.count)}
        link = link_header({"next": self.get_next_link(), "prev": self.get_previous_link()})
        if link:
            headers["Link"] = link
        return Response(data, headers=headers)

    def get_paginated_response_schema(self, schema: dict) -> dict:
        # The body stays the bare list; the page links are in headers (drf-spectacular
        # would otherwise document DRF's {count, next, previous, results} envelope).
        return schema

    @classmethod
    def schema_parameters(cls) -> list[OpenApiParameter]:
        return [
            OpenApiParameter("page", int, description="Page number (1-based)."),
            OpenApiParameter(
                "page_size", int, description=f"Items per page (max {cls.max_page_size})."
            ),
        ]


# --- Key cursor pagination (DynamoDB Scan) ----------------------------------------------
def cursor_encode(key: dict) -> str:
    """An opaque, URL-safe cursor from a DynamoDB LastEvaluatedKey."""
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_decode(cursor: str, *, key_attributes: Iterable[str]) -> dict:
    """The LastEvaluatedKey inside a cursor; ValidationError when it is not one of ours."""
    invalid = ValidationError({KeyCursorPagination.cursor_query_param: ["Invalid cursor."]})
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw.decode())
    except (ValueError, binascii.Error):
        raise invalid from None
    # Only string keys of this table: DynamoDB would answer a 400-class error otherwise,
    # and a forged cursor must not reach it as anything else.
    if not isinstance(key, dict) or set(key) != set(key_attributes):
        raise invalid
    for typed in key.values():
        if not isinstance(typed, dict) or set(typed) != {"S"} or not isinstance(typed["S"], str):
            raise invalid
        # DynamoDB keys are 1 to 2048 bytes.
        if not 0 < len(typed["S"].encode()) <= 2048:
            raise invalid
    return key


class KeyCursorPagination:
    """Cursor pages over a key-ordered store, in the legacy shape (bare list + Link header).

    The next page is `?cursor=<opaque>`; there is no total count (a Scan cannot give one
    cheaply) and no "prev" link (DynamoDB pages only forwards).
    """

    cursor_query_param = "cursor"
    page_size_query_param = "page_size"
    max_page_size = LinkHeaderPagination.max_page_size

    def get_page_size(self, request) -> int:
        # Same rules as the legacy pagination.
        return page_size_from_query(
            request,
            param=self.page_size_query_param,
            default=api_settings.PAGE_SIZE or 50,
            maximum=self.max_page_size,
        )

    def get_cursor(self, request, *, key_attributes: Iterable[str]) -> dict | None:
        cursor = request.query_params.get(self.cursor_query_param)
        if cursor is None:
            return None
        return cursor_decode(cursor, key_attributes=key_attributes)

    def get_paginated_response(self, data, *, request, next_key: dict | None) -> Response:
        headers = {}
        if next_key is not None:
            url = replace_query_param(
                request.build_absolute_uri(), self.cursor_query_param, cursor_encode(next_key)
            )
            headers["Link"] = link_header({"next": url})
        return Response(data, headers=headers)

    @classmethod
    def schema_parameters(cls) -> list[OpenApiParameter]:
        return [
            OpenApiParameter(
                cls.cursor_query_param,
                str,
                description="Opaque cursor from the `next` link of the previous page.",
            ),
            OpenApiParameter(
                cls.page_size_query_param,
                int,
                description=f"Items per page (max {cls.max_page_size}).",
            ),
        ]
