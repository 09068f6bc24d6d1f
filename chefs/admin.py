from django.contrib import admin

from chefs import selectors, services
from chefs.models import Chef


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


@admin.register(Chef)
class ChefAdmin(admin.ModelAdmin):
    list_display = ["id", "first_name", "last_name", "chef_id"]
    list_display_links = ["id", "first_name"]
    search_fields = ["first_name", "last_name", "chef_id"]
    list_filter = [HasKeyFilter, "last_name"]
    ordering = ["id"]
    list_per_page = 50
    fields = ["first_name", "last_name", "chef_id"]
    readonly_fields = ["chef_id"]

    # Writes go through the services so that they follow the same rules as the APIs.
    def save_model(self, request, obj, form, change):
        if change:
            # The form has already copied its values onto obj; update the stored row.
            services.chef_update(
                chef=selectors.chef_get(id=obj.pk),
                first_name=form.cleaned_data["first_name"],
                last_name=form.cleaned_data["last_name"],
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
