from django.contrib.admin.apps import AdminConfig


class BacksyncAdminConfig(AdminConfig):
    # `admin.site` is this project's site (config.admin.BacksyncAdminSite).
    default_site = "config.admin.BacksyncAdminSite"
