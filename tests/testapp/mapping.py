"""The second mapping (tests only): gadgets, with integer and boolean fields."""

from syncer.registry import FieldMap, Mapping

GADGET_MAPPING = Mapping(
    name="gadget",
    table="gadgets",
    key_attribute="Sku",
    model="testapp.Gadget",
    key_field="sku",
    fields=(
        FieldMap("name", "name"),
        FieldMap("count", "count", required=False),
        FieldMap("active", "active"),
    ),
    version_attribute="v",
)
