"""Operator views: the sync dashboard (admin, staff only), /healthz and /metrics (details
and metrics only with the metrics token or a staff session: syncer.access).

Thin: the figures come from `syncer.dashboard`, health from `syncer.health`, metrics from
`syncer.metrics`. The chart is inline SVG drawn here, so the page needs no JavaScript.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from syncer import dashboard, health, metrics, services
from syncer.access import ops_access_allowed
from syncer.models import AuditEntry, Conflict, FailedChange
from syncer.reconcile import REPAIR_DIRECTIONS
from syncer.registry import registry

# --- chart --------------------------------------------------------------------------------

CHART_W, CHART_H = 720, 220
PAD_L, PAD_R, PAD_T, PAD_B = 48, 48, 16, 28


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 < value:
        step *= 10
    while step > value * 10:
        step /= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def chart_svg(points: list[dashboard.MinutePoint]) -> SafeString:
    """Bars: changes applied per minute (left axis). Line: largest lag per minute (right)."""
    n = max(len(points), 1)
    inner_w, inner_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B
    top_count = _nice_max(max((p.applied for p in points), default=0))
    top_lag = _nice_max(max((p.lag_max or 0 for p in points), default=0))
    slot = inner_w / n

    bars = format_html_join(
        "",
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}">'
        "<title>{} UTC: {} applied</title></rect>",
        (
            (
                f"{PAD_L + i * slot + slot * 0.1:.1f}",
                f"{PAD_T + inner_h * (1 - p.applied / top_count):.1f}",
                f"{slot * 0.8:.1f}",
                f"{inner_h * p.applied / top_count:.1f}",
                p.minute.strftime("%H:%M"),
                p.applied,
            )
            for i, p in enumerate(points)
            if p.applied
        ),
    )
    lag_xy = [
        (PAD_L + (i + 0.5) * slot, PAD_T + inner_h * (1 - p.lag_max / top_lag))
        for i, p in enumerate(points)
        if p.lag_max is not None
    ]
    line = (
        format_html(
            '<polyline class="lag" points="{}"/>',
            " ".join(f"{x:.1f},{y:.1f}" for x, y in lag_xy),
        )
        if lag_xy
        else ""
    )
    dots = format_html_join(
        "",
        '<circle class="lag-dot" cx="{}" cy="{}" r="2.5"/>',
        ((f"{x:.1f}", f"{y:.1f}") for x, y in lag_xy),
    )
    first = points[0].minute.strftime("%H:%M") if points else ""
    last = points[-1].minute.strftime("%H:%M") if points else ""
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="sync-chart" role="img" '
        'viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        'aria-label="Changes applied per minute and largest lag per minute, last hour">'
        "<style>.bar{{fill:#79aec8}}.lag{{fill:none;stroke:#ba2121;stroke-width:2}}"
        ".lag-dot{{fill:#ba2121}}.axis{{stroke:#999}}text{{font:11px sans-serif;fill:#555}}"
        "</style>"
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        '<line class="axis" x1="{r}" y1="{t}" x2="{r}" y2="{b}"/>'
        '<text x="{lt}" y="{ty}" text-anchor="end">{top_count}</text>'
        '<text x="{lt}" y="{b}" text-anchor="end">0</text>'
        '<text x="{rt}" y="{ty}">{top_lag} s</text>'
        '<text x="{rt}" y="{b}">0 s</text>'
        '<text x="{l}" y="{xl}">{first}</text>'
        '<text x="{r}" y="{xl}" text-anchor="end">{last} UTC</text>'
        "{bars}{line}{dots}</svg>",
        w=CHART_W,
        h=CHART_H,
        l=PAD_L,
        r=CHART_W - PAD_R,
        t=PAD_T,
        b=PAD_T + inner_h,
        lt=PAD_L - 4,
        rt=CHART_W - PAD_R + 4,
        ty=PAD_T + 10,
        xl=CHART_H - 8,
        top_count=f"{top_count:g}",
        top_lag=f"{top_lag:g}",
        first=first,
        last=last,
        bars=bars,
        line=line,
        dots=dots,
    )


# --- admin dashboard ----------------------------------------------------------------------


def _changelist(model, **filters: str) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    return f"{url}?{query}" if query else url


@never_cache
def sync_dashboard(request: HttpRequest) -> TemplateResponse:
    """Wrapped by `admin.site.admin_view` in the URLconf: staff only, login redirect."""
    data = dashboard.dashboard_get()
    context = {
        **admin.site.each_context(request),
        "title": "Sync dashboard",
        "d": data,
        "chart": chart_svg(data.minutes),
        "failed_url": _changelist(FailedChange, status__exact=FailedChange.Status.FAILED),
        "conflicts_url": _changelist(Conflict, resolved__exact="0"),
        "window_minutes": int(dashboard.WINDOW.total_seconds() // 60),
    }
    return TemplateResponse(request, "syncer/dashboard.html", context)


# --- reconcile repair from the admin --------------------------------------------------------

REPAIR_PERMISSION = "syncer.repair_reconcilerun"


DIRECTION_LABELS = {
    "to-mysql": "to MySQL: DynamoDB wins (rows re-synced from DynamoDB)",
    "to-dynamo": "to DynamoDB: MySQL wins (rows published through the outbox)",
}


class ReconcileRepairForm(forms.Form):
    mappings = forms.MultipleChoiceField(
        choices=(), widget=forms.CheckboxSelectMultiple, help_text="Tables to compare."
    )
    direction = forms.ChoiceField(
        choices=[(d, DIRECTION_LABELS[d]) for d in REPAIR_DIRECTIONS], widget=forms.RadioSelect
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read per form: mappings are registered at start-up (and by tests).
        self.fields["mappings"].choices = [(n, n) for n in sorted(m.name for m in registry.all())]


@never_cache
def reconcile_repair(request: HttpRequest) -> TemplateResponse | HttpResponseRedirect:
    """Wrapped by `admin.site.admin_view`: staff only; the repair needs its own permission.
    The run is queued for the worker (a whole-table scan does not fit in a request)."""
    if not request.user.has_perm(REPAIR_PERMISSION):
        raise PermissionDenied
    form = ReconcileRepairForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.reconcile_repair_request(
            user=request.user,
            mapping_names=form.cleaned_data["mappings"],
            direction=form.cleaned_data["direction"],
        )
        messages.success(
            request,
            "Reconcile repair queued; its outcome appears in the audit trail when it ends.",
        )
        return HttpResponseRedirect(request.path)
    context = {
        **admin.site.each_context(request),
        "title": "Reconcile repair",
        "form": form,
        "recent": AuditEntry.objects.filter(action__startswith="repair ")[:10],
        "audit_url": _changelist(AuditEntry),
    }
    return TemplateResponse(request, "syncer/reconcile_repair.html", context)


# --- health and metrics -------------------------------------------------------------------


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Public: only ok or unavailable. Which part failed, and timings, are for staff or the
    metrics token (they tell an outsider how the service is built)."""
    # Decided before the checks: a failed database check closes the connection.
    details = ops_access_allowed(request=request)
    report = health.health_check()
    status = 200 if report.ok else 503
    if details:
        return JsonResponse(report.as_dict(), status=status)
    return JsonResponse({"status": report.as_dict()["status"]}, status=status)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not ops_access_allowed(request=request):
        response = HttpResponse("Metrics need the bearer token.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.metrics_render()
    return HttpResponse(body, content_type=content_type)
