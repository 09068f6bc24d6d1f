from django import forms
from django.contrib import admin, messages

from chefs import selectors, services
from chefs.mapping import CHEF_MAPPING
from chefs.models import Chef
from syncer.admin import has_model_perm
from syncer.audit import admin_audited
from syncer.selectors import SyncState, key_state_get, sync_annotations, sync_state_of


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
            (SyncState.PENDING, "pending publish"),
            (SyncState.CONFLICT, "conflict"),
            (SyncState.FAILED, "failed"),
        ]

    def queryset(self, request, queryset):
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
    list_filter = [SyncStateFilter, HasKeyFilter, "last_name"]
    ordering = ["id"]
    list_per_page = 50
    fields = ["first_name", "last_name", "seen_version", "chef_id"]
    readonly_fields = ["chef_id"]
    actions = ["publish_to_dynamo", "resync_from_dynamo"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(**sync_annotations(mapping=CHEF_MAPPING))

    @admin.display(description="sync")
    def sync_state(self, obj: Chef) -> str:
        return sync_state_of(obj, mapping=CHEF_MAPPING).label

    @admin.display(description="version", ordering="sync_version")
    def version(self, obj: Chef):
        return obj.sync_version

    # Writes go through the services so that they follow the same rules as the APIs.
    def save_model(self, request, obj, form, change):
        if change:
            # The form has already copied its values onto obj; update the stored row.
            services.chef_update(
                chef=selectors.chef_get(id=obj.pk),
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
