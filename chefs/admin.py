from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from chefs import services
from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.ops.admin import has_model_perm
from syncer.ops.audit import admin_audited
from syncer.ops.selectors import SyncState, key_state_get, sync_annotations, sync_state_of


class HasKeyFilter(admin.SimpleListFilter):
    title = "DynamoDB key"
    parameter_name = "has_key"

    def lookups(self, request, model_admin):
        return [("yes", "Has a key"), ("no", "No key yet")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(chef_id__isnull=False)
        if self.value() == "no":
            return queryset.filter(chef_id__isnull=True)
        return queryset


class SyncStateFilter(admin.SimpleListFilter):
    title = "sync state"
    parameter_name = "sync"

    def lookups(self, request, model_admin):
        return [
            (SyncState.IN_SYNC, "in sync"),
            (SyncState.PENDING, "pending publish"),
            (SyncState.CONFLICT, "conflict"),
            (SyncState.FAILED, "failed"),
        ]

    def queryset(self, request, queryset):
        if self.value() == SyncState.IN_SYNC:
            # As sync_state_of(): a key, and nothing failed, in conflict or pending.
            return queryset.filter(
                chef_id__isnull=False, sync_failed=False, sync_conflict=False, sync_pending=False
            )
        flag = {
            SyncState.PENDING: "sync_pending",
            SyncState.CONFLICT: "sync_conflict",
            SyncState.FAILED: "sync_failed",
        }.get(self.value())
        return queryset.filter(**{flag: True}) if flag else queryset


class ChefAdminForm(forms.ModelForm):
    # The item version the editor saw; an edit based on an older one becomes a conflict.
    seen_version = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Chef
        fields = ["first_name", "last_name"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Legacy columns are nullable, but a chef needs both names (as in the APIs).
        self.fields["first_name"].required = True
        self.fields["last_name"].required = True
        if self.instance.pk and not self.is_bound:
            state = key_state_get(mapping=CHEF_MAPPING, key=self.instance.chef_id)
            self.initial["seen_version"] = state.item_version if state else None


@admin.register(Chef)
class ChefAdmin(admin.ModelAdmin):
    form = ChefAdminForm
    list_display = ["id", "first_name", "last_name", "chef_id", "sync_state", "version"]
    list_display_links = ["id", "first_name"]
    search_fields = ["first_name", "last_name", "chef_id"]
    # No filter per last name: its list would grow with the table (search covers names).
    list_filter = [SyncStateFilter, HasKeyFilter]
    ordering = ["id"]
    list_per_page = 50
    fields = ["first_name", "last_name", "seen_version", "chef_id", "sync_state", "version"]
    readonly_fields = ["chef_id", "sync_state", "version"]
    actions = ["publish_to_dynamo", "resync_from_dynamo"]
    # The change page has Publish / Re-sync buttons (POST forms to the views below).
    change_form_template = "admin/chefs/chef/change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:object_id>/publish/", view(self.publish_view), name="chefs_chef_publish"),
            path("<int:object_id>/resync/", view(self.resync_view), name="chefs_chef_resync"),
            *super().get_urls(),
        ]

    def _one(self, request: HttpRequest, object_id: int) -> Chef:
        if not self.has_change_permission(request):
            raise PermissionDenied
        return get_object_or_404(self.get_queryset(request), pk=object_id)

    def _back(self, chef: Chef) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:chefs_chef_change", args=[chef.pk]))

    @method_decorator(require_POST)
    def publish_view(self, request: HttpRequest, object_id: int) -> HttpResponseRedirect:
        chef = self._one(request, object_id)
        services.chef_publish(chef=chef)
        self.message_user(request, "Queued for publishing to DynamoDB.", messages.SUCCESS)
        return self._back(chef)

    @method_decorator(require_POST)
    def resync_view(self, request: HttpRequest, object_id: int) -> HttpResponseRedirect:
        chef = self._one(request, object_id)
        if not chef.chef_id:
            self.message_user(request, "No key yet; publish it first.", messages.WARNING)
        else:
            services.chef_resync(chef=chef)
            self.message_user(request, "Re-synced from DynamoDB.", messages.SUCCESS)
        return self._back(chef)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        # A chef being added has no sync state or version yet.
        return fields if obj else [f for f in fields if f not in ("sync_state", "version")]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(**sync_annotations(mapping=CHEF_MAPPING))

    @admin.display(description="sync")
    def sync_state(self, obj: Chef) -> str:
        return sync_state_of(obj, mapping=CHEF_MAPPING).label

    @admin.display(description="version", ordering="sync_version")
    def version(self, obj: Chef):
        return getattr(obj, "sync_version", None)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except services.ChefGone:
            # Deleted after the form was read: what the admin says of any missing object.
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)

    # Writes go through the services so that they follow the same rules as the APIs.
    def save_model(self, request, obj, form, change):
        if change:
            # The form has already copied its values onto obj; update the stored row.
            services.chef_update(
                chef=obj,  # the service reads the stored row again, under its lock
                first_name=form.cleaned_data["first_name"],
                last_name=form.cleaned_data["last_name"],
                seen_version=form.cleaned_data.get("seen_version"),
            )
        else:
            created = services.chef_create(
                first_name=form.cleaned_data["first_name"],
                last_name=form.cleaned_data["last_name"],
            )
            obj.pk = created.pk

    def delete_model(self, request, obj):
        services.chef_delete(chef=obj)

    def delete_queryset(self, request, queryset):
        for chef in queryset:
            services.chef_delete(chef=chef)

    def has_publish_permission(self, request):
        return has_model_perm(request, self, "publish")

    def has_resync_permission(self, request):
        return has_model_perm(request, self, "resync")

    @admin.action(description="Publish to DynamoDB", permissions=["publish"])
    def publish_to_dynamo(self, request, queryset):
        with admin_audited(request, action="publish", queryset=queryset):
            for chef in queryset:
                services.chef_publish(chef=chef)
        self.message_user(request, f"{queryset.count()} chef(s) queued for publishing.")

    @admin.action(description="Re-sync from DynamoDB", permissions=["resync"])
    def resync_from_dynamo(self, request, queryset):
        done = skipped = 0
        with admin_audited(request, action="resync", queryset=queryset) as audit:
            for chef in queryset:
                if chef.chef_id:
                    services.chef_resync(chef=chef)
                    done += 1
                else:
                    skipped += 1
            audit.detail = f"{done} re-synced, {skipped} skipped (no key yet)"
        self.message_user(request, f"{done} chef(s) re-synced from DynamoDB.")
        if skipped:
            self.message_user(
                request, f"{skipped} chef(s) have no key yet; publish them first.", messages.WARNING
            )
