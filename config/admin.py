"""The project's admin site: Django's, with the sync dashboard listed inside the "Sync" app
(index and sidebar), so the index has one Sync section rather than a box of its own."""

from django.contrib import admin
from django.urls import reverse

DASHBOARD_ENTRY_NAME = "Sync dashboard"


class BacksyncAdminSite(admin.AdminSite):
    def get_app_list(self, request, app_label=None):
        app_list = super().get_app_list(request, app_label)
        for app in app_list:
            if app["app_label"] == "syncer":
                # First in the section; the rest stay sorted by name.
                app["models"].insert(
                    0,
                    {
                        "name": DASHBOARD_ENTRY_NAME,
                        "object_name": "SyncDashboard",
                        "perms": {"view": True},
                        "admin_url": reverse("sync-dashboard"),
                        "add_url": None,
                        "view_only": True,
                    },
                )
        return app_list
