"""The one DynamoDB item writer and reader for a mapped table.

Owns every write of a mapped item and the item reads that decide those writes:

- `item_create`, `item_update`, `item_delete`: single writes through the mapping's pynamodb
  model (its Meta comes from settings: syncer.aws.dynamo_model_meta), each conditioned so
  that it never overwrites what it did not see: a create only while the key is absent; an
  update or delete only while the item exists at version `base` (pynamodb's
  VersionAttribute adds "version = base", or "version absent" without a base, and the
  increment). A refused condition returns `ItemWrite(ok=False)`; any other error raises.
- `items_put`: the batch put of new items (backfill), through boto3's `BatchWriter`, which
  resends unprocessed items; a pause after a throttled response keeps it from spinning.
- `image_fetch` / `item_fetch` (consistent GetItem) and `items_fetch` (consistent
  BatchGetItem), all returning DynamoDB JSON; `image_build`, the item a row creates; and
  `image_values`, an item's attribute values as the outbox records them.

Callers: the outbox (syncer.outbox.publish: publish, key resync, the repairs reconcile asks
for), reconcile (syncer.reconcile.run: its per-key look), backfill to DynamoDB
(syncer.backfill), and the apply's fetch of items too large for a stream record
(syncer.pipeline.apply).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.table import BatchWriter
from boto3.dynamodb.types import TypeSerializer
from pynamodb.exceptions import PynamoDBException

from syncer.aws import dynamo_errors, dynamodb_client
from syncer.registry import Mapping, MappingError

CONDITION_FAILED = "ConditionalCheckFailedException"
BATCH_GET = 100  # BatchGetItem limit
BATCH_WRITE = 25  # BatchWriteItem limit
_serializer = TypeSerializer()


@dataclass
class ItemWrite:
    ok: bool  # False: the condition was refused (the item is not what the caller saw)
    version: int | None = None  # the item's version after the write
    error: str = ""


# --- single conditional writes (pynamodb) -------------------------------------------------


def _attributes(mapping: Mapping):
    model = mapping.get_dynamo_model()
    by_attr = {attr.attr_name: (name, attr) for name, attr in model.get_attributes().items()}
    return model, by_attr


def _refused(exc: PynamoDBException) -> bool:
    return getattr(exc, "cause_response_code", None) == CONDITION_FAILED


def item_create(*, mapping: Mapping, key: str, values: dict[str, Any]) -> ItemWrite:
    """Put the complete item of `key` (DynamoDB attribute -> value; None: absent), only while
    the key is absent. The version starts at 1 (pynamodb's VersionAttribute)."""
    model, by_attr = _attributes(mapping)
    hash_attr = by_attr[mapping.key_attribute][1]
    # A conditional put of the complete item (one INSERT record, also on moto, whose
    # UpdateItem-as-create emits an extra key-only INSERT).
    item = model(key, **{by_attr[a][0]: v for a, v in values.items() if v is not None})
    try:
        item.save(condition=hash_attr.does_not_exist())
    except PynamoDBException as exc:
        if _refused(exc):
            return ItemWrite(ok=False, error="condition failed")
        raise
    return ItemWrite(ok=True, version=_version(mapping, by_attr, item))


def item_update(
    *, mapping: Mapping, key: str, values: dict[str, Any], base: int | None
) -> ItemWrite:
    """Set `values` (None removes the attribute) on the existing item of `key`, only while
    it is at version `base` (None: an item without a version); the version is incremented."""
    model, by_attr = _attributes(mapping)
    version_name = by_attr[mapping.version_attribute][0] if mapping.version_attribute else None
    item = model(key)
    if version_name and base is not None:
        setattr(item, version_name, base)  # pynamodb conditions the write on it
    actions = []
    for attr, value in values.items():
        attribute = by_attr[attr][1]
        actions.append(attribute.remove() if value is None else attribute.set(value))
    try:
        item.update(actions=actions, condition=by_attr[mapping.key_attribute][1].exists())
    except PynamoDBException as exc:
        if _refused(exc):
            return ItemWrite(ok=False, error="condition failed")
        raise
    return ItemWrite(ok=True, version=_version(mapping, by_attr, item))


def item_delete(*, mapping: Mapping, key: str, base: int | None) -> ItemWrite:
    """Delete the item of `key`, only while it exists at version `base`."""
    model, by_attr = _attributes(mapping)
    item = model(key)
    if mapping.version_attribute and base is not None:
        setattr(item, by_attr[mapping.version_attribute][0], base)
    try:
        item.delete(condition=by_attr[mapping.key_attribute][1].exists())
    except PynamoDBException as exc:
        if _refused(exc):
            return ItemWrite(ok=False, error="condition failed")
        raise
    return ItemWrite(ok=True)


def _version(mapping: Mapping, by_attr: dict, item) -> int | None:
    if not mapping.version_attribute:
        return None
    return getattr(item, by_attr[mapping.version_attribute][0])


# --- batch put (boto3) ----------------------------------------------------------------------


def image_build(*, mapping: Mapping, key: str, row: dict[str, Any]) -> dict[str, Any]:
    """The item (DynamoDB JSON) for a row (model field -> value), as `item_create` writes
    it: the attributes that are not None, at version 1."""
    item = {mapping.key_attribute: {"S": key}}
    for attribute, value in mapping.values_from_row(row).items():
        if value is not None:
            item[attribute] = _serializer.serialize(value)
    if mapping.version_attribute:
        item[mapping.version_attribute] = {"N": "1"}
    return item


class _PacedClient:
    """The client BatchWriter sends through: AWS errors translated (dynamo_errors), and a
    pause, doubling up to 2 s, before a request that follows one left partly unprocessed
    (throttled), since BatchWriter resends those items at once."""

    def __init__(self, client) -> None:
        self._client = client
        self._delay = 0.0

    def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        if self._delay:
            time.sleep(self._delay)
        with dynamo_errors():
            response = self._client.batch_write_item(**kwargs)
        throttled = bool(response.get("UnprocessedItems"))
        self._delay = min(max(self._delay * 2, 0.05), 2.0) if throttled else 0.0
        return response


def items_put(*, mapping: Mapping, items: list[dict[str, Any]]) -> None:
    """Put `items` (DynamoDB JSON), unconditionally, in BatchWriteItem requests of 25,
    until every one is written. For new items only: the caller checked they are absent."""
    with BatchWriter(mapping.table_name, _PacedClient(dynamodb_client()), BATCH_WRITE) as batch:
        for item in items:
            batch.put_item(Item=item)


# --- reads ----------------------------------------------------------------------------------


def image_fetch(*, mapping: Mapping, keys: dict[str, Any]) -> dict[str, Any] | None:
    """The current item (DynamoDB JSON) by a consistent read; None when it is gone."""
    response = dynamodb_client().get_item(
        TableName=mapping.table_name, Key=keys, ConsistentRead=True
    )
    return response.get("Item")


def item_fetch(*, mapping: Mapping, key: str) -> dict[str, Any] | None:
    """The current item of `key` (DynamoDB JSON) by a consistent read; None when absent."""
    return image_fetch(mapping=mapping, keys={mapping.key_attribute: {"S": key}})


def items_fetch(*, mapping: Mapping, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The items (DynamoDB JSON) that exist among `keys`, by consistent BatchGetItems."""
    client = dynamodb_client()
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(keys), BATCH_GET):
        chunk = keys[start : start + BATCH_GET]
        request = {
            mapping.table_name: {
                "Keys": [{mapping.key_attribute: {"S": k}} for k in chunk],
                "ConsistentRead": True,
            }
        }
        delay = 0.05
        while request:
            with dynamo_errors():
                response = client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(mapping.table_name, []):
                found[item[mapping.key_attribute]["S"]] = item
            request = response.get("UnprocessedKeys") or {}
            if request:
                time.sleep(delay)  # throttled: back off before the rest
                delay = min(delay * 2, 2.0)
    return found


def image_values(*, mapping: Mapping, image: dict[str, Any] | None) -> dict[str, Any] | None:
    """An item's attribute values (plain, without the key), as the outbox records a row's;
    the raw attributes when the mapping refuses the item. None for no item."""
    if image is None:
        return None
    try:
        return mapping.values_from_row(mapping.row_from_image(image))
    except MappingError:
        # DynamoDB holds something the mapping refuses; show it raw.
        return {k: v for k, v in image.items() if k != mapping.key_attribute}
