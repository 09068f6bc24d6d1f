"""Pagination that keeps the legacy response shape (a bare JSON list).

Legacy clients expect a JSON array, so the page links travel in an RFC 8288 `Link`
header (rel="next" / rel="prev") and the total in `X-Total-Count`, as GitHub's API does.
"""

from drf_spectacular.utils import OpenApiParameter
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


def link_header(links: dict[str, str | None]) -> str:
    return ", ".join(f'<{url}>; rel="{rel}"' for rel, url in links.items() if url)


class LinkHeaderPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_paginated_response(self, data) -> Response:
        headers = {"X-Total-Count": str(self.page.paginator.count)}
        link = link_header({"next": self.get_next_link(), "prev": self.get_previous_link()})
        if link:
            headers["Link"] = link
        return Response(data, headers=headers)

    @classmethod
    def schema_parameters(cls) -> list[OpenApiParameter]:
        return [
            OpenApiParameter("page", int, description="Page number (1-based)."),
            OpenApiParameter(
                "page_size", int, description=f"Items per page (max {cls.max_page_size})."
            ),
        ]
