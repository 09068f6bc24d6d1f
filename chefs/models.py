"""The legacy table, exactly as the legacy API created it, plus the DynamoDB key column."""

from django.db import models

# DynamoDB keys compare byte for byte: a case- or accent-insensitive collation would make
# "Brown#Alton" and "brown#alton" collide on the unique index.
KEY_COLLATION = "utf8mb4_bin"


class Chef(models.Model):
    # Legacy columns: cheffirst / cheflast were created nullable by the legacy init SQL.
    id = models.BigAutoField(primary_key=True)
    first_name = models.CharField("first name", max_length=255, db_column="cheffirst", null=True)
    last_name = models.CharField("last name", max_length=255, db_column="cheflast", null=True)
    # Added by backsync: the DynamoDB key (ChefId). Null for legacy rows not yet keyed.
    chef_id = models.CharField(
        "DynamoDB key",
        max_length=255,
        unique=True,
        null=True,
        blank=True,
        db_collation=KEY_COLLATION,
    )

    class Meta:
        db_table = "cheftable"
        ordering = ["id"]
        # Operator actions (sync operators group, chefs/roles.py); view/add/change/delete
        # are Django's defaults, used by the APIs (chefs/api/permissions.py).
        permissions = [
            ("publish_chef", "Can publish chefs to DynamoDB"),
            ("resync_chef", "Can re-sync chefs from DynamoDB"),
        ]

    def __str__(self) -> str:
        return f"{self.first_name or ''} {self.last_name or ''}".strip() or f"Chef {self.pk}"
