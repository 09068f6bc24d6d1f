import json

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from syncer.models import (
    AppliedBatch,
    AuditEntry,
    Conflict,
    FailedChange,
    KeyState,
    OutboxEntry,
    ShardCheckpoint,
)
from syncer.ops.audit import admin_audited
from syncer.outbox import sweep as outbox
from syncer.pipeline import failed as services


class PrettyJSONField(forms.JSONField):
    """JSON shown indented with sorted keys, so a payload can be read and fixed by hand."""

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value  # what the operator typed, kept for correction
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=self.encoder)


class FailedChangeForm(forms.ModelForm):
    payload = PrettyJSONField(
        widget=forms.Textarea(attrs={"rows": 24, "class": "payload-editor", "spellcheck": "false"}),
        help_text="Fix the change here, then use “Save and replay”.",
    )

    class Meta:
        model = FailedChange
        fields = ["payload"]


def has_model_perm(request, model_admin, action: str) -> bool:
    """`action` permission on the admin's model (e.g. syncer.replay_failedchange): the
    operator actions are granted through the "sync operators" group (chefs/roles.py)."""
    opts = model_admin.opts
    return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")


@admin.register(FailedChange)
class FailedChangeAdmin(admin.ModelAdmin):
    form = FailedChangeForm
    # Adds the Replay / Discard buttons to the change page (handled in response_change).
    change_form_template = "admin/syncer/failedchange/change_form.html"
    list_display = [
        "id",
        "status",
        "source",
        "event_name",
        "mapping",
        "key",
        "attempts",
        "short_error",
        "last_failed_at",
    ]
    list_filter = ["status", "source", "mapping", "event_name"]
    search_fields = ["key", "event_id", "error"]
    ordering = ["-last_failed_at"]
    actions = ["replay", "discard"]
    # The payload stays editable so an operator can fix a change before replaying it.
    readonly_fields = [
        "source",
        "status",
        "mapping",
        "key",
        "event_id",
        "event_name",
        "sequence",
        "error",
        "attempts",
        "first_failed_at",
        "last_failed_at",
        "resolved_at",
    ]
    fields = [*readonly_fields[:6], "payload", *readonly_fields[6:]]

    def has_add_permission(self, request):
        return False

    def response_change(self, request, obj: FailedChange):
        # The form (an edited payload) is saved first, so a replay applies what was edited.
        if "_replay" in request.POST:
            result = services.failed_change_replay(failed_change=obj)
            if result.failed:
                obj.refresh_from_db(fields=["error"])
                self.message_user(request, f"Replay failed again: {obj.error}", messages.ERROR)
            else:
                self.message_user(request, "Change replayed.", messages.SUCCESS)
            return HttpResponseRedirect(request.path)
        if "_discard" in request.POST:
            services.failed_change_discard(failed_change=obj)
            self.message_user(request, "Change discarded.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:syncer_failedchange_changelist"))
        return super().response_change(request, obj)

    @admin.display(description="error")
    def short_error(self, obj: FailedChange) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:77] + "..."

    def has_replay_permission(self, request):
        return has_model_perm(request, self, "replay")

    def has_discard_permission(self, request):
        return has_model_perm(request, self, "discard")

    @admin.action(description="Replay the selected changes", permissions=["replay"])
    def replay(self, request, queryset):
        ok = failed = 0
        with admin_audited(request, action="replay", queryset=queryset) as audit:
            for failed_change in queryset.exclude(status=FailedChange.Status.REPLAYED):
                result = services.failed_change_replay(failed_change=failed_change)
                if result.failed:
                    failed += 1
                else:
                    ok += 1
            audit.count, audit.failed = ok + failed, failed
            audit.detail = f"{ok} replayed, {failed} failed again"
        if ok:
            self.message_user(request, f"{ok} change(s) replayed.", messages.SUCCESS)
        if failed:
            self.message_user(
                request, f"{failed} change(s) failed again; see their errors.", messages.ERROR
            )

    @admin.action(description="Discard the selected changes", permissions=["discard"])
    def discard(self, request, queryset):
        with admin_audited(request, action="discard", queryset=queryset):
            for failed_change in queryset:
                services.failed_change_discard(failed_change=failed_change)
        self.message_user(request, f"{queryset.count()} change(s) discarded.", messages.SUCCESS)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(KeyState)
class KeyStateAdmin(ReadOnlyAdmin):
    list_display = ["mapping", "key", "sequence", "deleted", "item_version", "applied_at"]
    list_filter = ["mapping", "deleted"]
    search_fields = ["key"]


@admin.register(AppliedBatch)
class AppliedBatchAdmin(ReadOnlyAdmin):
    list_display = ["applied_at", "mapping", "applied", "stale", "lag_max"]
    list_filter = ["mapping"]
    # A key or an event id, found inside the batch's entries (substring search).
    search_fields = ["entries"]
    search_help_text = "A key or a stream event id in the batch's changes."
    date_hierarchy = "applied_at"
    fields = ["mapping", "applied_at", "applied", "stale", "lag_max", "changes_table"]
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        # `entries` is compressed JSON text as json.dumps writes it (ASCII: a quote or a
        # non-ASCII character of a key is escaped, \" and \u00e9), read in SQL with
        # UNCOMPRESS() (CompressedJSONField's `text`): the term is looked for so spelled.
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(entries__text__icontains=json.dumps(term)[1:-1]), False

    @admin.display(description="changes")
    def changes_table(self, obj: AppliedBatch):
        header = format_html_join(
            "", "<th>{}</th>", ((name.replace("_", " "),) for name in AppliedBatch.ENTRY_FIELDS)
        )
        body = format_html_join(
            "",
            "<tr>{}</tr>",
            (
                (format_html_join("", "<td>{}</td>", ((v,) for v in entry)),)
                for entry in obj.entries
            ),
        )
        return format_html("<table><tr>{}</tr>{}</table>", header, body)


@admin.register(ShardCheckpoint)
class ShardCheckpointAdmin(ReadOnlyAdmin):
    list_display = [
        "shard_id",
        "sequence_number",
        "finished",
        "records_total",
        "last_batch_size",
        "last_batch_at",
    ]


@admin.register(OutboxEntry)
class OutboxEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "status",
        "op",
        "mapping",
        "object_pk",
        "key",
        "base_version",
        "published_version",
        "attempts",
        "last_error",
        "created_at",
    ]
    list_filter = ["status", "op", "mapping"]
    search_fields = ["key", "object_pk", "last_error"]
    actions = ["retry"]

    def has_retry_permission(self, request):
        return has_model_perm(request, self, "retry")

    @admin.action(description="Retry the selected failed entries", permissions=["retry"])
    def retry(self, request, queryset):
        with admin_audited(request, action="retry", queryset=queryset) as audit:
            count = outbox.outbox_retry_failed(entries=queryset)
            outbox.outbox_sweep()
            audit.detail = f"{count} queued again"
        self.message_user(request, f"{count} entr(y/ies) queued again.", messages.SUCCESS)


@admin.register(Conflict)
class ConflictAdmin(ReadOnlyAdmin):
    list_display = [
        "detected_at",
        "kind",
        "mapping",
        "key",
        "object_pk",
        "legacy_values",
        "legacy_base_version",
        "dynamo_values",
        "dynamo_version",
        "resolved",
    ]
    list_filter = ["kind", "mapping", "resolved"]
    search_fields = ["key", "object_pk"]
    actions = ["mark_resolved"]

    def has_review_permission(self, request):
        return has_model_perm(request, self, "review")

    @admin.action(description="Mark as reviewed", permissions=["review"])
    def mark_resolved(self, request, queryset):
        with admin_audited(request, action="review", queryset=queryset) as audit:
            count = outbox.conflicts_resolve(conflicts=queryset)
            audit.detail = f"{count} marked as reviewed"
        self.message_user(request, f"{count} conflict(s) marked as reviewed.", messages.SUCCESS)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "via", "action", "target", "count", "outcome", "detail"]
    list_filter = ["via", "action", "outcome", "target"]
    search_fields = ["actor", "object_ids", "detail"]
    date_hierarchy = "at"
