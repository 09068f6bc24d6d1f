"""A second mapped model, only in tests: proves `syncer` names no chef field."""

from django.db import models


class Gadget(models.Model):
    sku = models.CharField(max_length=64, unique=True, null=True, db_collation="utf8mb4_bin")
    name = models.CharField(max_length=20)
    count = models.IntegerField(null=True)
    active = models.BooleanField(default=False)

    class Meta:
        app_label = "testapp"

    def __str__(self) -> str:
        return self.name
