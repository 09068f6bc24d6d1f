from django.contrib import admin
from django.urls import path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from chefs.api import dynamo, legacy
from config import views as config_views
from syncer.ops import views as syncer_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index"), name="root"),
    path("favicon.ico", config_views.favicon, name="favicon"),
    # Before admin.site.urls so the admin's catch-all does not take it; staff only.
    path(
        "admin/sync/",
        admin.site.admin_view(syncer_views.sync_dashboard),
        name="sync-dashboard",
    ),
    path(
        "admin/sync/reconcile/",
        admin.site.admin_view(syncer_views.reconcile_repair),
        name="sync-reconcile-repair",
    ),
    path("admin/", admin.site.urls),
    path("healthz", syncer_views.healthz, name="healthz"),
    path("metrics", syncer_views.metrics_view, name="metrics"),
    path("aurora/", legacy.LegacyStatusView.as_view(), name="legacy-status"),
    path("aurora/chefs", legacy.LegacyChefListView.as_view(), name="legacy-chefs"),
    path(
        "aurora/chefs/<int:chef_pk>",
        legacy.LegacyChefDetailView.as_view(),
        name="legacy-chef-detail",
    ),
    path("dynamo/chefs", dynamo.DynamoChefListView.as_view(), name="dynamo-chefs"),
    # `path`: keys may contain "/" (sent as %2F, which the server decodes before routing).
    path(
        "dynamo/chefs/<path:chef_id>",
        dynamo.DynamoChefDetailView.as_view(),
        name="dynamo-chef-detail",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # Last: whatever else is under the API prefixes answers a JSON 404.
    # Any other path under the APIs (a newline included) is the APIs' JSON 404.
    re_path(r"^(?:aurora|dynamo)/(?P<path>[\s\S]*)$", config_views.api_not_found),
]
