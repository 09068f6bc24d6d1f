"""The roles people get: Django groups holding model permissions.

- readers: list and read chefs on both APIs (and in the admin, if staff);
- writers: also create, change and delete chefs;
- sync operators: the repair actions (replay, discard, publish, re-sync, retry, mark a
  conflict reviewed) and read access to the sync's bookkeeping in the admin.

A user may be in several groups. The admin also needs `is_staff`; a group cannot grant
that. Created by the data migration chefs/0003; `roles_ensure` can be run again (it only
adds what is missing and sets each group's permissions to exactly these).
"""

from __future__ import annotations

from django.apps import apps as global_apps

READERS, WRITERS, SYNC_OPERATORS = "readers", "writers", "sync operators"

_SYNC_VIEW = [
    "syncer.view_failedchange",
    "syncer.view_conflict",
    "syncer.view_outboxentry",
    "syncer.view_keystate",
    "syncer.view_appliedbatch",
    "syncer.view_shardcheckpoint",
    "syncer.view_auditentry",
]

ROLES: dict[str, list[str]] = {
    READERS: ["chefs.view_chef"],
    WRITERS: ["chefs.view_chef", "chefs.add_chef", "chefs.change_chef", "chefs.delete_chef"],
    SYNC_OPERATORS: [
        "chefs.view_chef",
        "chefs.publish_chef",
        "chefs.resync_chef",
        *_SYNC_VIEW,
        # Editing a failed change's payload before replaying it is part of the repair.
        "syncer.change_failedchange",
        "syncer.replay_failedchange",
        "syncer.discard_failedchange",
        "syncer.review_conflict",
        "syncer.retry_outboxentry",
        "syncer.repair_reconcilerun",
    ],
}


def roles_ensure(*, apps=global_apps, roles: dict[str, list[str]] = ROLES) -> None:
    """Create the groups and give each exactly its permissions.

    Works with a migration's historical `apps` too: the permissions are created first when
    missing (Django creates them only after all migrations, in post_migrate).
    """
    from django.contrib.auth.management import create_permissions

    for label in sorted({perm.split(".", 1)[0] for perms in roles.values() for perm in perms}):
        app_config = apps.get_app_config(label)
        # Historical app configs have no models module; create_permissions skips those.
        had_module = getattr(app_config, "models_module", None)
        app_config.models_module = had_module or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = had_module

    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for name, perms in roles.items():
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".", 1)
            # get(): a missing permission is a mistake in ROLES, not something to skip.
            wanted.append(
                permission_model.objects.get(content_type__app_label=app_label, codename=codename)
            )
        group, _ = group_model.objects.get_or_create(name=name)
        group.permissions.set(wanted)
