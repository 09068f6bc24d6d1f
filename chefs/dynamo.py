"""The DynamoDB table `chef` as a pynamodb model; the only way the web app reaches it."""

from django.conf import settings
from pynamodb.attributes import UnicodeAttribute, VersionAttribute
from pynamodb.models import Model

from syncer.aws import DynamoUnavailable, dynamo_model_meta

__all__ = ["ChefItem", "DynamoUnavailable"]


class ChefItem(Model):
    # Table name, endpoint, region and timeouts all come from settings via syncer.aws.
    Meta = dynamo_model_meta(table_name=settings.DYNAMO_CHEF_TABLE)

    ChefId = UnicodeAttribute(hash_key=True)
    firstName = UnicodeAttribute(null=True)  # noqa: N815 - DynamoDB attribute names
    lastName = UnicodeAttribute(null=True)  # noqa: N815
    # Optimistic locking: pynamodb adds "version = <loaded>" to writes and increments it.
    version = VersionAttribute()

    def __repr__(self) -> str:
        return f"ChefItem({self.ChefId!r}, version={self.version})"
