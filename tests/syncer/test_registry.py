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
