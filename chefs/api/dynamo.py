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


class DynamoChefCreateInput(serializers.Serializer):
    # A missing name defaults as the legacy API did; a present one must be valid.
    firstName = NameField(required=False, default=services.DEFAULT_FIRST_NAME)  # noqa: N815
    lastName = NameField(required=False, default=services.DEFAULT_LAST_NAME)  # noqa: N815
    # Defaults to "<lastName>#<firstName>". Kept exactly as sent: spaces are part of a key.
    chefId = NameField(required=False, trim_whitespace=False)  # noqa: N815


class DynamoChefUpdateInput(serializers.Serializer):
    firstName = NameField()  # noqa: N815
    lastName = NameField()  # noqa: N815
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
_UPDATE_RESPONSES = {
    200: DynamoChefOutput,
    400: None,
    404: _NOT_FOUND,
    409: _CONFLICT,
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
        responses={200: DynamoChefOutput(many=True), 400: None, 503: _UNAVAILABLE},
    )
    def get(self, request: Request) -> Response:
        paginator = self.paginator_class()
        cursor = paginator.get_cursor(request, key_attributes=[ChefItem._hash_keyname])
        items, next_key = dynamo_services.dynamo_chef_page(
            cursor=cursor, limit=paginator.get_page_size(request)
        )
        return paginator.get_paginated_response(
            DynamoChefOutput(items, many=True).data, request=request, next_key=next_key
        )

    @extend_schema(
        operation_id="dynamo_chefs_create",
        request=DynamoChefCreateInput,
        responses={201: DynamoChefOutput, 200: DynamoChefOutput, 400: None, 503: _UNAVAILABLE},
        description="Create a chef, or update the names of an existing key (200).",
    )
    def post(self, request: Request) -> Response:
        data = DynamoChefCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            item, created = dynamo_services.dynamo_chef_create_or_update(
                chef_id=data.validated_data.get("chefId"),
                first_name=data.validated_data["firstName"],
                last_name=data.validated_data["lastName"],
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(
            DynamoChefOutput(item).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class DynamoChefDetailView(APIView):
    permission_classes = [DynamoChefPermissions]

    @extend_schema(
        operation_id="dynamo_chefs_retrieve",
        responses={200: DynamoChefOutput, 404: _NOT_FOUND, 503: _UNAVAILABLE},
    )
    def get(self, request: Request, chef_id: str) -> Response:
        item = dynamo_services.dynamo_chef_get(chef_id=chef_id)
        if item is None:
            raise _not_found(chef_id)
        return Response(DynamoChefOutput(item).data)

    def _update(self, request: Request, chef_id: str, *, partial: bool) -> Response:
        data = DynamoChefUpdateInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
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
