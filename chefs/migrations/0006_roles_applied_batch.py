"""Data migration: sync operators read the applied-change log as batches (AppliedBatch,
syncer/0009) instead of rows per change (AppliedChange, gone)."""

from django.db import migrations

# Frozen here, as in 0004: the roles as of this migration.
ROLES = {
    "readers": ["chefs.view_chef"],
    "writers": ["chefs.view_chef", "chefs.add_chef", "chefs.change_chef", "chefs.delete_chef"],
    "sync operators": [
        "chefs.view_chef",
        "chefs.publish_chef",
        "chefs.resync_chef",
        "syncer.view_failedchange",
        "syncer.view_conflict",
        "syncer.view_outboxentry",
        "syncer.view_keystate",
        "syncer.view_appliedbatch",
        "syncer.view_shardcheckpoint",
        "syncer.view_auditentry",
        "syncer.change_failedchange",
        "syncer.replay_failedchange",
        "syncer.discard_failedchange",
        "syncer.review_conflict",
        "syncer.retry_outboxentry",
        "syncer.repair_reconcilerun",
    ],
}


def roles_update(apps, schema_editor):
    from chefs.roles import roles_ensure

    roles_ensure(apps=apps, roles=ROLES)


def roles_revert(apps, schema_editor):
    from chefs.roles import roles_ensure

    # AppliedChange comes back only when syncer/0009 is reversed, after this: its view
    # permission cannot be created from the models here (create_permissions), and it is gone
    # once the stale content types were removed (or the tables flushed), so make it.
    content_type_model = apps.get_model("contenttypes", "ContentType")
    permission_model = apps.get_model("auth", "Permission")
    content_type, _ = content_type_model.objects.get_or_create(
        app_label="syncer", model="appliedchange"
    )
    permission_model.objects.get_or_create(
        content_type=content_type,
        codename="view_appliedchange",
        defaults={"name": "Can view applied change"},
    )
    previous = {
        name: ["syncer.view_appliedchange" if p == "syncer.view_appliedbatch" else p for p in perms]
        for name, perms in ROLES.items()
    }
    roles_ensure(apps=apps, roles=previous)


class Migration(migrations.Migration):
    dependencies = [
        ("chefs", "0005_capture_triggers"),
        ("syncer", "0009_appliedbatch"),
    ]

    operations = [migrations.RunPython(roles_update, roles_revert)]
