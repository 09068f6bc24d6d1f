"""The Chef mapping: DynamoDB table `chef` mirrored into the legacy table `cheftable`."""

from django.conf import settings

from chefs.dynamo_services import chef_key
from syncer.registry import FieldMap, Mapping

CHEF_MAPPING = Mapping(
    name="chef",
    table=lambda: settings.DYNAMO_CHEF_TABLE,
    key_attribute="ChefId",
    model="chefs.Chef",
    key_field="chef_id",
    fields=(FieldMap("firstName", "first_name"), FieldMap("lastName", "last_name")),
    version_attribute="version",
    dynamo_model="chefs.dynamo.ChefItem",
    # Legacy rows get the key the new API would have given them.
    key_rule=lambda row: chef_key(first_name=row["first_name"], last_name=row["last_name"]),
)
