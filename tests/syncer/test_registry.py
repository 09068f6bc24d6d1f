"""Mapping conversion: the fast path for text fields decides exactly as Field.clean does."""

import pytest
from django.core.exceptions import ValidationError

from syncer.registry import MappingError, _plain_text_limit
from tests.testapp.models import Gadget


@pytest.mark.parametrize(
    "value", ["", "ok", "x" * 20, "x" * 21, "é" * 20, "é" * 21, " ", None, 5, b"bytes"]
)
def test_text_fast_path_matches_field_clean(gadget_mapping, value):
    field = Gadget._meta.get_field("name")  # CharField(max_length=20), not blank
    try:
        expected = field.clean(value, None)
    except ValidationError as exc:
        with pytest.raises(MappingError) as raised:
            gadget_mapping._clean("name", value, label="name")
        assert "; ".join(exc.messages) in str(raised.value)
    else:
        assert gadget_mapping._clean("name", value, label="name") == expected


def test_fast_path_only_for_plain_text_fields():
    assert _plain_text_limit("testapp.Gadget", "name") == (20, False)
    assert _plain_text_limit("testapp.Gadget", "count") is None  # not text
    assert _plain_text_limit("syncer.FailedChange", "status") is None  # has choices


def _outcome(func):
    try:
        return ("ok", func())
    except MappingError as exc:
        return ("error", str(exc))


NAMES = [
    {"S": ""},
    {"S": "ok"},
    {"S": "x" * 20},
    {"S": "x" * 21},
    {"S": "é" * 21},
    {"S": " "},
    {"N": "5"},
    {"S": 5},
    {"S": "a", "N": "1"},
    {"NULL": True},
    None,
    "plain",
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("count", [{"N": "3"}, {"S": "3"}, {"NULL": True}, None])
def test_row_fast_path_decides_as_each_field_would(gadget_mapping, name, count):
    """row_from_image takes plain text without the per-field calls; whatever it returns or
    refuses must be what converting each field the whole way does."""
    image = {"Sku": {"S": "k"}, "active": {"BOOL": True}}
    for attribute, typed in (("name", name), ("count", count)):
        if typed is not None:
            image[attribute] = typed

    def whole_way():
        return {
            fm.field: gadget_mapping._field_from_image(fm, image) for fm in gadget_mapping.fields
        }

    assert _outcome(lambda: gadget_mapping.row_from_image(image)) == _outcome(whole_way)


@pytest.mark.parametrize(
    "keys",
    [
        {"Sku": {"S": "k"}},
        {"Sku": {"S": ""}},
        {"Sku": {"S": "x" * 64}},
        {"Sku": {"S": "x" * 65}},
        {"Sku": {"S": "k", "N": "1"}},
        {"Sku": {"N": "1"}},
        {"Sku": {"S": 1}},
        {"Other": {"S": "k"}},
        {"Sku": "k"},
        [],
    ],
)
def test_key_fast_path_decides_as_clean_would(gadget_mapping, keys):
    def whole_way():
        typed = keys.get("Sku") if isinstance(keys, dict) else None
        if not isinstance(typed, dict) or set(typed) != {"S"} or not isinstance(typed["S"], str):
            raise MappingError("unknown key shape")
        return gadget_mapping._clean("sku", typed["S"], label="Sku")

    got, want = _outcome(lambda: gadget_mapping.key_from_keys(keys)), _outcome(whole_way)
    assert got[0] == want[0] and (got == want or "unknown key shape" in got[1])
