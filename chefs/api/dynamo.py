"""The new API (`/dynamo/chefs`) over DynamoDB, compatible with the API it replaces.

Views are thin: validate with serializers, call `chefs.dynamo_services`, map domain errors to
HTTP (404 missing, 409 stale version; 503 for an unavailable DynamoDB is in config.api).
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chefs import dynamo_services, services
from chefs.api.fields import NameField
from chefs.api.pagination import KeyCursorPagination
from chefs.api.permissions import DynamoChefPermissions
from chefs.dynamo import ChefItem


class DynamoChefOutput(serializers.Serializer):
    chefId = serializers.CharField(source="ChefId")  # noqa: N815
    firstName = serializers.CharField(allow_null=True)  # noqa: N815
    lastName = serializers.CharField(allow_null=True)  # noqa: N815
    version = serializers.IntegerField(allow_null=True)


class DynamoChefListItemOutput(DynamoChefOutput):
    # Only on items that do not fit the chef schema (written to the table by something else
    # than this API): why, per attribute, and the item as stored, in DynamoDB JSON.
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
    attributes = serializers.DictField(required=False)


class MalformedItemOutput(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))
    item = DynamoChefListItemOutput()


def _plain(typed: object, kind: str) -> object:
    """The value of a DynamoDB JSON attribute when it has the expected type, else None."""
    if isinstance(typed, dict) and len(typed) == 1 and kind in typed:
        return typed[kind]
    return None


def reading_data(reading: dynamo_services.ChefReading) -> dict:
    """An item for the API: the usual fields, and for a malformed one also `errors` and
    `attributes`; fields of a wrong type are null there (their value is in `attributes`)."""
    if not reading.errors:
        return DynamoChefOutput(reading.item).data
    version = _plain(reading.raw.get("version"), "N")
    return {
        "chefId": _plain(reading.raw.get("ChefId"), "S"),
        "firstName": _plain(reading.raw.get("firstName"), "S"),
        "lastName": _plain(reading.raw.get("lastName"), "S"),
        "version": int(version) if isinstance(version, str) and version.isdigit() else None,
        "errors": reading.errors,
        "attributes": reading.raw,
    }


def malformed_response(reading: dynamo_services.ChefReading) -> Response:
    return Response(
        {
            "detail": "The stored item does not fit the chef schema (written by another "
            "service?); a PUT with both names repairs it.",
            "errors": reading.errors,
            "item": reading_data(reading),
        },
        status=status.HTTP_422_UNPROCESSABLE_ENTITY,
    )


class DynamoChefCreateInput(serializers.Serializer):
    # A missing name defaults as the legacy API did; a present one must be valid.
    firstName = NameField(required=False, default=services.DEFAULT_FIRST_NAME)  # noqa: N815
    lastName = NameField(required=False, default=services.DEFAULT_LAST_NAME)  # noqa: N815
    # Defaults to "<lastName>#<firstName>". Kept exactly as sent: spaces are part of a key.
    chefId = NameField(required=False, trim_whitespace=False)  # noqa: N815
    # Same contract as PUT/PATCH: with it, only an existing item at this version is updated.
    version = serializers.IntegerField(
        required=False,
        min_value=0,
        help_text="Version the change is based on: 409 if stale, 404 if the key is absent.",
    )


class DynamoChefUpdateInput(serializers.Serializer):
    firstName = NameField()  # noqa: N815
    lastName = NameField()  # noqa: N815
    # Optional (a GET's body sent back as is); the key is the URL's and cannot change.
    chefId = serializers.CharField(  # noqa: N815
        required=False, trim_whitespace=False, help_text="If sent, must equal the URL's key."
    )
    version = serializers.IntegerField(
        required=False, min_value=0, help_text="Version the change is based on (409 if stale)."
    )


class DynamoChefDeleteQuery(serializers.Serializer):
    version = serializers.IntegerField(required=False, min_value=0)


class VersionConflictOutput(serializers.Serializer):
    detail = serializers.CharField()
    current = DynamoChefOutput()


_UNAVAILABLE = OpenApiResponse(description="DynamoDB unavailable; see the Retry-After header.")
_NOT_FOUND = OpenApiResponse(description="No item with this key.")
_CONFLICT = OpenApiResponse(VersionConflictOutput, description="Stale version; current item.")
_MALFORMED = OpenApiResponse(
    MalformedItemOutput, description="The stored item does not fit the chef schema."
)
_UPDATE_RESPONSES = {
    200: DynamoChefOutput,
    400: None,
    404: _NOT_FOUND,
    409: _CONFLICT,
    422: _MALFORMED,
    503: _UNAVAILABLE,
}


def _not_found(chef_id: str) -> NotFound:
    return NotFound(f"No chef with key {chef_id!r}.")


def _conflict(exc: dynamo_services.DynamoVersionConflict) -> Response:
    return Response(
        {
            "detail": f"Version conflict: the chef is at version {exc.current.version}.",
            "current": DynamoChefOutput(exc.current).data,
        },
        status=status.HTTP_409_CONFLICT,
    )


class DynamoChefListView(APIView):
    permission_classes = [DynamoChefPermissions]
    # Not `pagination_class`: DRF's schema generator expects a queryset paginator there.
    paginator_class = KeyCursorPagination

    @extend_schema(
        operation_id="dynamo_chefs_list",
        parameters=KeyCursorPagination.schema_parameters(),
        responses={200: DynamoChefListItemOutput(many=True), 400: None, 503: _UNAVAILABLE},
        description="Items that do not fit the chef schema (written by another service) are "
        "listed with `errors` and their stored `attributes`.",
    )
    def get(self, request: Request) -> Response:
        paginator = self.paginator_class()
        cursor = paginator.get_cursor(request, key_attributes=[ChefItem._hash_keyname])
        readings, next_key = dynamo_services.dynamo_chef_page(
            cursor=cursor, limit=paginator.get_page_size(request)
        )
        return paginator.get_paginated_response(
            [reading_data(reading) for reading in readings], request=request, next_key=next_key
        )

    @extend_schema(
        operation_id="dynamo_chefs_create",
        request=DynamoChefCreateInput,
        responses={
            201: DynamoChefOutput,
            200: DynamoChefOutput,
            400: None,
            404: _NOT_FOUND,
            409: _CONFLICT,
            503: _UNAVAILABLE,
        },
        description="Create a chef, or update the names of an existing key (200). With "
        "`version`, only update the item at that version (409 stale, 404 absent).",
    )
    def post(self, request: Request) -> Response:
        data = DynamoChefCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        chef_id = data.validated_data.get("chefId")
        try:
            item, created = dynamo_services.dynamo_chef_create_or_update(
                chef_id=chef_id,
                first_name=data.validated_data["firstName"],
                last_name=data.validated_data["lastName"],
                expected_version=data.validated_data.get("version"),
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        except ChefItem.DoesNotExist as exc:
            raise NotFound(str(exc)) from None
        except dynamo_services.DynamoVersionConflict as exc:
            return _conflict(exc)
        return Response(
            DynamoChefOutput(item).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DynamoChefDetailView(APIView):
    permission_classes = [DynamoChefPermissions]

    @extend_schema(
        operation_id="dynamo_chefs_retrieve",
        responses={200: DynamoChefOutput, 404: _NOT_FOUND, 422: _MALFORMED, 503: _UNAVAILABLE},
    )
    def get(self, request: Request, chef_id: str) -> Response:
        reading = dynamo_services.dynamo_chef_read(chef_id=chef_id)
        if reading is None:
            raise _not_found(chef_id)
        if reading.errors:
            return malformed_response(reading)
        return Response(DynamoChefOutput(reading.item).data)

    def _update(self, request: Request, chef_id: str, *, partial: bool) -> Response:
        data = DynamoChefUpdateInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        body_key = data.validated_data.get("chefId", chef_id)
        if body_key != chef_id:
            raise ValidationError(
                {"chefId": [f"Must be the key in the URL ({chef_id!r}); a key cannot change."]}
            )
        try:
            item = dynamo_services.dynamo_chef_update(
                chef_id=chef_id,
                first_name=data.validated_data.get("firstName"),
                last_name=data.validated_data.get("lastName"),
                expected_version=data.validated_data.get("version"),
            )
        except ChefItem.DoesNotExist:
            raise _not_found(chef_id) from None
        except dynamo_services.DynamoVersionConflict as exc:
            return _conflict(exc)
        return Response(DynamoChefOutput(item).data)

    @extend_schema(
        operation_id="dynamo_chefs_update",
        request=DynamoChefUpdateInput,
        responses=_UPDATE_RESPONSES,
    )
    def put(self, request: Request, chef_id: str) -> Response:
        return self._update(request, chef_id, partial=False)

    @extend_schema(
        operation_id="dynamo_chefs_partial_update",
        request=DynamoChefUpdateInput(partial=True),
        responses=_UPDATE_RESPONSES,
    )
    def patch(self, request: Request, chef_id: str) -> Response:
        return self._update(request, chef_id, partial=True)

    @extend_schema(
        operation_id="dynamo_chefs_destroy",
        parameters=[
            OpenApiParameter(
                "version", int, description="Delete only at this version (409 if stale)."
            )
        ],
        responses={204: None, 400: None, 404: _NOT_FOUND, 409: _CONFLICT, 503: _UNAVAILABLE},
    )
    def delete(self, request: Request, chef_id: str) -> Response:
        query = DynamoChefDeleteQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            dynamo_services.dynamo_chef_delete(
                chef_id=chef_id, expected_version=query.validated_data.get("version")
            )
        except ChefItem.DoesNotExist:
            raise _not_found(chef_id) from None
        except dynamo_services.DynamoVersionConflict as exc:
            return _conflict(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)
