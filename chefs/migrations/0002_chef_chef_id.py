from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chefs", "0001_legacy_cheftable")]

    operations = [
        migrations.AddField(
            model_name="chef",
            name="chef_id",
            field=models.CharField(
                blank=True,
                db_collation="utf8mb4_bin",
                max_length=255,
                null=True,
                unique=True,
                verbose_name="DynamoDB key",
            ),
        ),
    ]
