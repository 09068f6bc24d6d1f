"""Serializer fields shared by the legacy and the new API."""

from rest_framework import serializers


class NameField(serializers.CharField):
    """A non-blank string of at most 255 characters; other JSON types are refused, not cast."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 255)
        kwargs.setdefault("allow_blank", False)
        kwargs.setdefault("trim_whitespace", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)
