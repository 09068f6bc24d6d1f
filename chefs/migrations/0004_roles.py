"""Data migration: the groups readers, writers and sync operators (chefs/roles.py)."""

from django.db import migrations

# Frozen here: a later change of the roles gets its own migration.
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
        "syncer.view_appliedchange",
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


def create_roles(apps, schema_editor):
    from chefs.roles import roles_ensure

    roles_ensure(apps=apps, roles=ROLES)


def delete_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("chefs", "0003_chef_permissions"),
        ("syncer", "0006_operator_permissions_audit"),
    ]

    operations = [migrations.RunPython(create_roles, delete_roles)]
