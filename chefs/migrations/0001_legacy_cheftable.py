"""Create the legacy table, or adopt it where the legacy init endpoint already created it.

The SQL is the legacy init statement with IF NOT EXISTS, so `migrate` works both on an
empty database and on a legacy one whose `cheftable` already holds rows.
"""

from django.db import migrations, models

LEGACY_SQL = (
    "CREATE TABLE IF NOT EXISTS cheftable("
    "id BIGINT AUTO_INCREMENT PRIMARY KEY, cheffirst VARCHAR(255), cheflast VARCHAR(255))"
)


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(LEGACY_SQL, reverse_sql="DROP TABLE IF EXISTS cheftable"),
            ],
            state_operations=[
                migrations.CreateModel(
                    name="Chef",
                    fields=[
                        ("id", models.BigAutoField(primary_key=True, serialize=False)),
                        (
                            "first_name",
                            models.CharField(
                                db_column="cheffirst",
                                max_length=255,
                                null=True,
                                verbose_name="first name",
                            ),
                        ),
                        (
                            "last_name",
                            models.CharField(
                                db_column="cheflast",
                                max_length=255,
                                null=True,
                                verbose_name="last name",
                            ),
                        ),
                    ],
                    options={"db_table": "cheftable", "ordering": ["id"]},
                ),
            ],
        ),
    ]
