"""Services and selectors over the DynamoDB table `chef` (through `chefs.dynamo.ChefItem`).

Writes are conditional: a create is a put of the complete item guarded by "key absent",
an update is an UpdateItem guarded by "key exists" (and the version when one is given),
never a blind put over a partial model. Optimistic locking uses the item's `version`: a
caller that read version N may pass it as `expected_version`; if the item has moved on, the
write is refused with DynamoVersionConflict carrying the current item.
This path never touches MySQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

from django.core.exceptions import ValidationError
from pynamodb.exceptions import AttributeDeserializationError, PynamoDBException
from pynamodb.pagination import ResultIterator

from chefs.dynamo import ChefItem
from chefs.models import Chef
from syncer.aws import dynamo_errors

# The key is mirrored into cheftable.chef_id, so it must fit there.
CHEF_KEY_MAX_LENGTH = Chef._meta.get_field("chef_id").max_length
_CONDITION_FAILED = "ConditionalCheckFailedException"
# Attempts of the create-or-update race (created and deleted by others meanwhile).
_UPSERT_ATTEMPTS = 5


class DynamoVersionConflict(Exception):
    """The item's version is not the one the caller based its change on."""

    def __init__(self, current: ChefItem) -> None:
        super().__init__(f"{current.ChefId!r} is at version {current.version}")
        self.current = current


@dataclass(frozen=True)
class ChefReading:
    """An item as stored. Other services write the table directly, so an item may not fit
    the chef schema (a Number name, a missing or over-long one, a text version): then
    `item` may be None and `errors` says, per attribute, what is wrong; `raw` is the item
    in DynamoDB JSON either way."""

    raw: dict[str, dict[str, Any]]
    item: ChefItem | None
    errors: dict[str, list[str]]


class DynamoItemMalformed(Exception):
    """The stored item does not fit the chef schema (see ChefReading)."""

    def __init__(self, reading: ChefReading) -> None:
        super().__init__(f"stored item does not fit the chef schema: {reading.errors}")
        self.reading = reading


def chef_reading(raw: dict[str, dict[str, Any]]) -> ChefReading:
    """Read a raw item without failing: the model when it fits, the errors when it does not.

    The rule is the sync mapping's (what would reach MySQL), plus what pynamodb can read.
    """
    # Imported here: chefs.mapping imports chef_key from this module.
    from chefs.mapping import CHEF_MAPPING

    errors = {attr: [message] for attr, message in CHEF_MAPPING.image_errors(raw).items()}
    try:
        item = ChefItem.from_raw_data(raw)
    except (AttributeDeserializationError, ValueError, TypeError) as exc:
        item = None
        if not errors:  # a shape the mapping accepts but pynamodb refuses
            errors["item"] = [str(exc)]
    return ChefReading(raw=raw, item=item, errors=errors)


def chef_key(*, first_name: str, last_name: str) -> str:
    """The key the API derives from a name, as the original API did: "<lastName>#<firstName>"."""
    return f"{last_name}#{first_name}"


def _key_validate(chef_id: str, *, field: str) -> str:
    if not chef_id:
        raise ValidationError({field: ["The key must not be empty."]})
    if len(chef_id) > CHEF_KEY_MAX_LENGTH:
        raise ValidationError(
            {field: [f"The key must have at most {CHEF_KEY_MAX_LENGTH} characters."]}
        )
    return chef_id


def _condition_failed(exc: PynamoDBException) -> bool:
    return exc.cause_response_code == _CONDITION_FAILED


def _name_actions(*, first_name: str | None, last_name: str | None) -> list:
    actions = []
    if first_name is not None:
        actions.append(ChefItem.firstName.set(first_name))
    if last_name is not None:
        actions.append(ChefItem.lastName.set(last_name))
    return actions


def _conflict_or_missing(chef_id: str) -> Exception:
    """After a failed condition: the item is gone (DoesNotExist) or has moved on (conflict)."""
    current = dynamo_chef_get(chef_id=chef_id)
    if current is None:
        return ChefItem.DoesNotExist(f"No chef with key {chef_id!r}.")
    return DynamoVersionConflict(current)


# --- selectors --------------------------------------------------------------------------
def dynamo_chef_get(*, chef_id: str) -> ChefItem | None:
    """The item, None when missing; DynamoItemMalformed when it does not fit the schema."""
    reading = dynamo_chef_read(chef_id=chef_id)
    if reading is None:
        return None
    if reading.errors:
        raise DynamoItemMalformed(reading)
    return reading.item


def dynamo_chef_read(*, chef_id: str) -> ChefReading | None:
    """The item as stored (never fails on its shape); None when missing."""
    with dynamo_errors():
        data = ChefItem._get_connection().get_item(chef_id, consistent_read=True)
    raw = (data or {}).get("Item")
    return chef_reading(raw) if raw else None


@contextmanager
def _existing_item_write(chef_id: str) -> Iterator[None]:
    """A write conditioned on the item existing (and on its version, when given): a refused
    condition becomes DoesNotExist or DynamoVersionConflict; an outage, DynamoUnavailable."""
    with dynamo_errors():
        try:
            yield
        except PynamoDBException as exc:
            if not _condition_failed(exc):
                raise
            raise _conflict_or_missing(chef_id) from None


def dynamo_chef_page(
    *, cursor: dict[str, Any] | None, limit: int
) -> tuple[list[ChefReading], dict[str, Any] | None]:
    """One page of a Scan: up to `limit` items and the key to continue from (None at the end).

    Every item is read with chef_reading(), so one item another service wrote in a wrong
    shape is shown with its errors instead of failing the whole page.
    One item more than asked is read so that the last page has no "next" (a bare Scan with
    Limit would return a LastEvaluatedKey and then an empty page).
    """
    with dynamo_errors():
        # ChefItem.scan() with chef_reading instead of from_raw_data as the item reader.
        results = ResultIterator(
            ChefItem._get_connection().scan,
            (),
            {"exclusive_start_key": cursor, "limit": limit + 1},
            map_fn=chef_reading,
            limit=limit + 1,
        )
        items = list(islice(results, limit))
        # pynamodb rebuilds LastEvaluatedKey from the last item handed out.
        next_key = results.last_evaluated_key if items else None
        has_more = next(results, None) is not None
    return items, (next_key if has_more else None)


# --- services ---------------------------------------------------------------------------
def dynamo_chef_create_or_update(
    *,
    chef_id: str | None,
    first_name: str,
    last_name: str,
    expected_version: int | None = None,
) -> tuple[ChefItem, bool]:
    """Create the item, or update its names if the key exists (as the original POST did).

    The key defaults to chef_key(). Returns (item, created). With `expected_version` the
    caller has seen the item: only that version is updated (DynamoVersionConflict when it
    moved on, ChefItem.DoesNotExist when it is gone), as dynamo_chef_update does.
    """
    explicit = chef_id is not None
    key = chef_id if explicit else chef_key(first_name=first_name, last_name=last_name)
    _key_validate(key, field="chefId" if explicit else "lastName")
    if expected_version is not None:
        item = dynamo_chef_update(
            chef_id=key,
            first_name=first_name,
            last_name=last_name,
            expected_version=expected_version,
        )
        return item, False
    with dynamo_errors():
        for _attempt in range(_UPSERT_ATTEMPTS):
            # Create only if absent; pynamodb adds "version absent" and sets version 1.
            # A conditional put of the complete item, not an UpdateItem: moto's UpdateItem
            # on a new key emits two INSERT stream records, the first with the key only.
            item = ChefItem(key, firstName=first_name, lastName=last_name)
            try:
                item.save(condition=ChefItem.ChefId.does_not_exist())
                return item, True
            except PynamoDBException as exc:
                if not _condition_failed(exc):
                    raise
            # It exists: last write wins on the names, the version still goes up by one.
            # (A non-None local version makes pynamodb emit "ADD version 1".)
            item = ChefItem(key, version=0)
            try:
                item.update(
                    actions=_name_actions(first_name=first_name, last_name=last_name),
                    condition=ChefItem.ChefId.exists(),
                    add_version_condition=False,
                )
                return item, False
            except PynamoDBException as exc:
                if not _condition_failed(exc):
                    raise
            # Deleted between the two calls: try creating again.
    raise RuntimeError(f"create-or-update of {key!r} kept racing with other writers")


def dynamo_chef_update(
    *,
    chef_id: str,
    first_name: str | None = None,
    last_name: str | None = None,
    expected_version: int | None = None,
) -> ChefItem:
    """Change the given names of an existing item.

    Raises ChefItem.DoesNotExist, or DynamoVersionConflict when `expected_version` is given
    and is not the item's current version.
    """
    actions = _name_actions(first_name=first_name, last_name=last_name)
    if not actions:
        current = dynamo_chef_get(chef_id=chef_id)
        if current is None:
            raise ChefItem.DoesNotExist(f"No chef with key {chef_id!r}.")
        if expected_version is not None and current.version != expected_version:
            raise DynamoVersionConflict(current)
        return current
    # With expected_version pynamodb adds "version = expected" and "ADD version 1";
    # without it, last write wins but the version still increments.
    item = ChefItem(chef_id, version=expected_version if expected_version is not None else 0)
    with _existing_item_write(chef_id):
        item.update(
            actions=actions,
            condition=ChefItem.ChefId.exists(),
            add_version_condition=expected_version is not None,
        )
    return item


def dynamo_chef_delete(*, chef_id: str, expected_version: int | None = None) -> None:
    """Delete an existing item. Raises ChefItem.DoesNotExist or DynamoVersionConflict."""
    item = ChefItem(chef_id)
    if expected_version is not None:
        item.version = expected_version
    with _existing_item_write(chef_id):
        item.delete(
            condition=ChefItem.ChefId.exists(),
            add_version_condition=expected_version is not None,
        )
