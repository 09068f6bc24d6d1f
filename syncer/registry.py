"""Mapping registry: which DynamoDB table mirrors into which Django model, and how.

`syncer` is generic: it never names a domain field. An app registers a `Mapping` (usually in
its AppConfig.ready) and the stream pipeline, the outbox and reconcile work from it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import models
from django.utils.module_loading import import_string


class MappingError(ValueError):
    """A change that cannot be applied through its mapping (wrong type, too long, missing)."""


# The DynamoDB type a model field's value must arrive as.
_NUMBER_FIELDS = (models.IntegerField, models.DecimalField, models.FloatField)


def _dynamo_type(model_field: models.Field) -> str:
    if isinstance(model_field, models.BooleanField):
        return "BOOL"
    if isinstance(model_field, _NUMBER_FIELDS):
        return "N"
    return "S"


@dataclass(frozen=True)
class FieldMap:
    attribute: str  # DynamoDB attribute name
    field: str  # Django model field name
    required: bool = True


@dataclass(frozen=True)
class Mapping:
    name: str
    table: str | Callable[[], str]  # table name, or a callable reading it from settings
    key_attribute: str
    model: str  # "app_label.ModelName"
    key_field: str
    fields: tuple[FieldMap, ...]
    version_attribute: str | None = None
    dynamo_model: str | None = None  # dotted path of the pynamodb model, for writes and scans
    # Builds the key for a row that has none yet (legacy rows), from its field values.
    key_rule: Callable[[dict[str, Any]], str] | None = None

    # --- resolution -----------------------------------------------------------------
    @property
    def table_name(self) -> str:
        return self.table() if callable(self.table) else self.table

    def get_model(self) -> type[models.Model]:
        return apps.get_model(self.model)

    def get_dynamo_model(self):
        if not self.dynamo_model:
            raise LookupError(f"mapping {self.name!r} declares no pynamodb model")
        return import_string(self.dynamo_model)

    @functools.cached_property
    def _field_plans(self) -> tuple[tuple[FieldMap, tuple[float, bool] | None], ...]:
        """Per field map: the plain-text limit when the attribute must arrive as S and its
        field is plain text (see _plain_text_limit), else None. Kept on the instance (not
        a cache keyed by the mapping: hashing a frozen dataclass hashes every field)."""
        return tuple(
            (
                fm,
                _plain_text_limit(self.model, fm.field)
                if _expected_type(self.model, fm.field) == "S"
                else None,
            )
            for fm in self.fields
        )

    def model_field(self, name: str) -> models.Field:
        return _model_field(self.model, name)

    # --- conversion -----------------------------------------------------------------
    def key_from_keys(self, keys: dict[str, dict[str, Any]]) -> str:
        """The key value from a stream record's `Keys` (DynamoDB JSON)."""
        typed = keys.get(self.key_attribute) if isinstance(keys, dict) else None
        value = typed.get("S") if type(typed) is dict and len(typed) == 1 else None
        if type(value) is not str:
            raise MappingError(
                f"unknown key shape: expected {{{self.key_attribute!r}: {{'S': ...}}}}, "
                f"got {keys!r}"[:500]
            )
        return self._clean(self.key_field, value, label=self.key_attribute)

    def row_from_image(self, image: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Model field values from a stream image (DynamoDB JSON); raises MappingError."""
        if not isinstance(image, dict):
            raise MappingError("image is missing")
        row = {}
        for fm, plain in self._field_plans:
            # Hot path of every applied change: a plain text attribute that _field_from_image
            # would accept unchanged is taken here, without its three calls; anything else
            # (other types, a value to check or refuse) goes the whole way.
            if plain is not None:
                typed = image.get(fm.attribute)
                value = typed.get("S") if type(typed) is dict and len(typed) == 1 else None
                if type(value) is str and len(value) <= plain[0] and (value or plain[1]):
                    row[fm.field] = value
                    continue
            row[fm.field] = self._field_from_image(fm, image)
        return row

    def image_errors(self, image: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Per attribute, why this item (DynamoDB JSON) does not fit the mapping: what
        row_from_image / key_from_keys would refuse, and a version that is not an integer.
        Empty when it fits. Extra attributes are ignored, as the sync ignores them."""
        if not isinstance(image, dict):
            return {self.key_attribute: "item is missing"}
        errors: dict[str, str] = {}
        try:
            self.key_from_keys({self.key_attribute: image.get(self.key_attribute)})
        except MappingError as exc:
            errors[self.key_attribute] = str(exc)
        for fm in self.fields:
            try:
                self._field_from_image(fm, image)
            except MappingError as exc:
                errors[fm.attribute] = str(exc)
        version = image.get(self.version_attribute) if self.version_attribute else None
        if version is not None and self.version_from_image(image) is None:
            errors[self.version_attribute] = (
                f"{self.version_attribute}: expected an integer number, got {version!r}"[:500]
            )
        return errors

    def _field_from_image(self, fm: FieldMap, image: dict[str, dict[str, Any]]) -> Any:
        typed = image.get(fm.attribute)
        if typed is None or typed == _NULL:
            if fm.required:
                raise MappingError(f"{fm.attribute}: missing attribute")
            return None
        return self._clean(fm.field, self._untype(fm, typed), label=fm.attribute)

    def version_from_image(self, image: dict[str, dict[str, Any]] | None) -> int | None:
        if not self.version_attribute or not image:
            return None
        typed = image.get(self.version_attribute)
        if isinstance(typed, dict) and "N" in typed:
            number = typed["N"]
            if type(number) is str and number.isascii() and number.isdigit():
                return int(number)  # the usual case, without a Decimal
            try:
                return int(Decimal(number))
            except (ArithmeticError, ValueError):
                return None
        return None

    def values_from_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """DynamoDB attribute values (plain Python) from model field values."""
        return {fm.attribute: row.get(fm.field) for fm in self.fields}

    def _untype(self, fm: FieldMap, typed: dict[str, Any]) -> Any:
        expected = _expected_type(self.model, fm.field)
        if not isinstance(typed, dict) or len(typed) != 1 or expected not in typed:
            got = next(iter(typed), "?") if isinstance(typed, dict) and typed else repr(typed)
            raise MappingError(f"{fm.attribute}: expected type {expected}, got {got}")
        # Hand-read, not boto3's TypeDeserializer: that one costs ~4 us a change more
        # (row_from_image of a chef: 8.9 -> 12.8 us) on the apply's hot path, where issue 17
        # counts every microsecond, and the type check above is needed anyway (it accepts
        # any type). Only S and N reach here (the mapping's attribute types).
        value = typed[expected]
        if expected == "N":
            try:
                return Decimal(value)
            except ArithmeticError as exc:
                raise MappingError(f"{fm.attribute}: not a number: {value!r}") from exc
        return value

    def _clean(self, field_name: str, value: Any, *, label: str) -> Any:
        limit = _plain_text_limit(self.model, field_name)
        # Hot path of every applied and reconciled change: a string that Field.clean would
        # return unchanged is accepted without it (about 10x cheaper), and without looking
        # the field up; anything else, including every value that fails, goes through
        # clean() for its exact message.
        if (
            limit is not None
            and type(value) is str
            and (len(value) <= limit[0])
            and (value or limit[1])
        ):
            return value
        try:
            return self.model_field(field_name).clean(value, None)
        except ValidationError as exc:
            raise MappingError(f"{label}: {'; '.join(exc.messages)}") from exc


@functools.cache
def _model_field(model_label: str, name: str) -> models.Field:
    # Hot path of every applied change; the app registry is fixed once Django is set up.
    return apps.get_model(model_label)._meta.get_field(name)


_NULL = {"NULL": True}


@functools.cache
def _expected_type(model_label: str, name: str) -> str:
    return _dynamo_type(_model_field(model_label, name))


@functools.cache
def _plain_text_limit(model_label: str, name: str) -> tuple[float, bool] | None:
    """(max length, blank allowed) when the field is a CharField/TextField whose clean()
    does nothing to a str but check its length and blankness; None otherwise."""
    field = _model_field(model_label, name)
    if type(field) not in (models.CharField, models.TextField) or field.choices:
        return None
    default = [v for v in field.validators if isinstance(v, MaxLengthValidator)]
    if len(field.validators) != len(default) or len(default) > 1:
        return None  # custom validators: let clean() run them
    limit = field.max_length if field.max_length is not None else float("inf")
    return (limit, field.blank)


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, Mapping] = {}

    def register(self, mapping: Mapping) -> Mapping:
        existing = self._by_name.get(mapping.name)
        if existing is not None and existing != mapping:
            raise ValueError(f"a different mapping is already registered as {mapping.name!r}")
        self._by_name[mapping.name] = mapping
        return mapping

    def unregister(self, name: str) -> None:
        self._by_name.pop(name, None)

    def get(self, name: str) -> Mapping:
        try:
            return self._by_name[name]
        except KeyError:
            raise LookupError(f"no mapping named {name!r}") from None

    def for_table(self, table_name: str) -> Mapping:
        for mapping in self._by_name.values():
            if mapping.table_name == table_name:
                return mapping
        raise LookupError(f"no mapping for DynamoDB table {table_name!r}")

    def all(self) -> list[Mapping]:
        return list(self._by_name.values())


registry = Registry()
register = registry.register
