"""The legacy API (`/aurora/...`) over MySQL, compatible with the API it replaces."""

from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chefs import selectors, services
from chefs.api.fields import NameField
from chefs.api.pagination import LinkHeaderPagination
from chefs.api.permissions import ChefPermissions
from chefs.models import Chef
from syncer.ops.selectors import database_server_info


class LegacyChefOutput(serializers.ModelSerializer):
    firstName = serializers.CharField(source="first_name", allow_null=True)  # noqa: N815
    lastName = serializers.CharField(source="last_name", allow_null=True)  # noqa: N815
    chefId = serializers.CharField(source="chef_id", allow_null=True)  # noqa: N815

    class Meta:
        model = Chef
        fields = ["id", "firstName", "lastName", "chefId"]


class LegacyChefCreateInput(serializers.Serializer):
    # A missing field defaults as the legacy API did; a present one must be valid.
    firstName = NameField(required=False, default=services.DEFAULT_FIRST_NAME)  # noqa: N815
    lastName = NameField(required=False, default=services.DEFAULT_LAST_NAME)  # noqa: N815


class LegacyChefUpdateInput(serializers.Serializer):
    firstName = NameField()  # noqa: N815
    lastName = NameField()  # noqa: N815
    # Optional (a GET's body sent back as is); the row is the URL's and cannot change.
    id = serializers.IntegerField(required=False, help_text="If sent, must equal the URL's id.")
    # Optional: the DynamoDB item version the client saw (GET /dynamo/chefs/<key>). An edit
    # based on an older version is not written over DynamoDB; it becomes a conflict.
    version = serializers.IntegerField(required=False, min_value=1)


def _get_or_404(chef_pk: int) -> Chef:
    chef = selectors.chef_get(id=chef_pk)
    if chef is None:
        raise NotFound(f"No chef with id {chef_pk}.")
    return chef


class LegacyStatusView(APIView):
    """Database status. The legacy endpoint created the schema; migrations do that now."""

    permission_classes = [ChefPermissions]

    @extend_schema(
        operation_id="legacy_status",
        responses=inline_serializer(
            "LegacyStatus",
            {
                "database": serializers.CharField(),
                "vendor": serializers.CharField(),
                "engine": serializers.CharField(help_text="MySQL or MariaDB"),
                "serverVersion": serializers.CharField(),
                "migrationsApplied": serializers.BooleanField(),
                "pendingMigrations": serializers.ListField(child=serializers.CharField()),
                "chefCount": serializers.IntegerField(allow_null=True),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        pending = [f"{m.app_label}.{m.name}" for m, _backwards in plan]
        count = None if pending else selectors.chef_list().count()
        server = database_server_info()
        return Response(
            {
                "database": connection.settings_dict["NAME"],
                "vendor": connection.vendor,
                "engine": server["engine"],
                "serverVersion": server["version"],
                "migrationsApplied": not pending,
                "pendingMigrations": pending,
                "chefCount": count,
            }
        )


class LegacyChefListView(APIView):
    permission_classes = [ChefPermissions]
    pagination_class = LinkHeaderPagination

    @extend_schema(
        operation_id="legacy_chefs_list",
        parameters=LinkHeaderPagination.schema_parameters(),
        # 404: a page number past the end (DRF's page pagination).
        responses={200: LegacyChefOutput(many=True), 400: None, 404: None},
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.chef_list(), request, view=self)
        return paginator.get_paginated_response(LegacyChefOutput(page, many=True).data)

    @extend_schema(
        operation_id="legacy_chefs_create",
        request=LegacyChefCreateInput,
        responses={201: LegacyChefOutput, 400: None},
    )
    def post(self, request: Request) -> Response:
        data = LegacyChefCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        chef = services.chef_create(
            first_name=data.validated_data["firstName"],
            last_name=data.validated_data["lastName"],
        )
        return Response(LegacyChefOutput(chef).data, status=status.HTTP_201_CREATED)


class LegacyChefDetailView(APIView):
    permission_classes = [ChefPermissions]

    @extend_schema(
        operation_id="legacy_chefs_retrieve", responses={200: LegacyChefOutput, 404: None}
    )
    def get(self, request: Request, chef_pk: int) -> Response:
        return Response(LegacyChefOutput(_get_or_404(chef_pk)).data)

    def _update(self, request: Request, chef_pk: int, *, partial: bool) -> Response:
        chef = _get_or_404(chef_pk)
        data = LegacyChefUpdateInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        if data.validated_data.get("id", chef_pk) != chef_pk:
            raise ValidationError({"id": [f"Must be the id in the URL ({chef_pk})."]})
        try:
            chef = services.chef_update(
                chef=chef,
                first_name=data.validated_data.get("firstName"),
                last_name=data.validated_data.get("lastName"),
                seen_version=data.validated_data.get("version"),
            )
        except services.ChefGone as exc:
            raise NotFound(str(exc)) from exc
        return Response(LegacyChefOutput(chef).data)

    @extend_schema(
        operation_id="legacy_chefs_update",
        request=LegacyChefUpdateInput,
        responses={200: LegacyChefOutput, 400: None, 404: None},
    )
    def put(self, request: Request, chef_pk: int) -> Response:
        return self._update(request, chef_pk, partial=False)

    @extend_schema(
        operation_id="legacy_chefs_partial_update",
        request=LegacyChefUpdateInput(partial=True),
        responses={200: LegacyChefOutput, 400: None, 404: None},
    )
    def patch(self, request: Request, chef_pk: int) -> Response:
        return self._update(request, chef_pk, partial=True)

    @extend_schema(operation_id="legacy_chefs_destroy", responses={204: None, 404: None})
    def delete(self, request: Request, chef_pk: int) -> Response:
        services.chef_delete(chef=_get_or_404(chef_pk))
        return Response(status=status.HTTP_204_NO_CONTENT)
