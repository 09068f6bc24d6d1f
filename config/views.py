"""Project-level views: the root redirect, the favicon and the APIs' JSON 404."""

from functools import cache
from pathlib import Path

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt

_FAVICON = Path(__file__).with_name("favicon.ico")


@cache
def _favicon_bytes() -> bytes:
    return _FAVICON.read_bytes()


@cache_control(public=True, max_age=86_400)
def favicon(request: HttpRequest) -> HttpResponse:
    # Served by the app, not from static storage: browsers ask for /favicon.ico at the root.
    return HttpResponse(_favicon_bytes(), content_type="image/x-icon")


@csrf_exempt
def api_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other path under an API prefix: a JSON 404 like the APIs' own, on every method
    (Django's 404 would be an HTML page, its debug page in DEBUG)."""
    return JsonResponse({"detail": f"No API endpoint at {request.path!r}."}, status=404)
