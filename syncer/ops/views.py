"""Operator views: the sync dashboard (admin, staff only), /healthz and /metrics (details
and metrics only with the metrics token or a staff session: syncer.ops.access).

Thin: the figures come from `syncer.ops.dashboard`, health from `syncer.ops.health`, metrics from
`syncer.ops.metrics`. The chart is inline SVG drawn here, so the page needs no JavaScript.
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

from syncer.models import AuditEntry, Conflict, FailedChange
from syncer.ops import dashboard, health, metrics
from syncer.ops.access import ops_access_allowed
from syncer.reconcile import run as reconcile
from syncer.reconcile.report import REPAIR_DIRECTIONS
from syncer.registry import registry

# --- chart --------------------------------------------------------------------------------

# Drawing units (viewBox); the SVG scales to its panel's width (no sideways scroll).
CHART_W, CHART_H = 640, 260
PAD_L, PAD_R, PAD_T, PAD_B = 64, 64, 28, 48
X_TICK_MINUTES = 10


def _nice_max(value: float) -> float:
    """A round axis maximum at or above value (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 < value:
        step *= 10
    while step > value:
        step /= 10
    for m in (1, 2, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _ticks(top: float) -> list[float]:
    """Evenly spaced round ticks from 0 to a _nice_max() value (4 or 5 intervals)."""
    intervals = 4 if f"{top:e}"[0] == "2" else 5
    return [top * i / intervals for i in range(intervals + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.10g}"


def chart_svg(points: list[dashboard.MinutePoint]) -> SafeString:
    """Bars: changes applied per minute (left axis). Line: largest lag per minute (right).

    Both value axes have ticks and grid lines; the time axis a tick every ten minutes.
    """
    n = max(len(points), 1)
    inner_w, inner_h = CHART_W - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B
    left, right, top, bottom = PAD_L, CHART_W - PAD_R, PAD_T, PAD_T + inner_h
    # At least 0-5 changes, so that an idle hour's count ticks stay whole numbers.
    top_count = _nice_max(max([5, *(p.applied for p in points)]))
    top_lag = _nice_max(max((p.lag_max or 0 for p in points), default=0))
    slot = inner_w / n

    def y_of(fraction: float) -> str:
        return f"{bottom - inner_h * fraction:.1f}"

    bars = format_html_join(
        "",
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}">'
        "<title>{} UTC: {} applied</title></rect>",
        (
            (
                f"{left + i * slot + slot * 0.1:.1f}",
                y_of(p.applied / top_count),
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
        (left + (i + 0.5) * slot, bottom - inner_h * p.lag_max / top_lag)
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
    # Value ticks: grid line, left label (count), right label (lag) at the same heights.
    count_ticks, lag_ticks = _ticks(top_count), _ticks(top_lag)
    rows = len(count_ticks) == len(lag_ticks)
    y_ticks = format_html_join(
        "",
        '<line class="grid" x1="{l}" y1="{y}" x2="{r}" y2="{y}"/>'
        '<text class="tick tick-count" x="{lt}" y="{yt}" text-anchor="end">{c}</text>',
        (
            {
                "l": left,
                "r": right,
                "y": y_of(v / top_count),
                "lt": left - 6,
                "yt": f"{float(y_of(v / top_count)) + 4:.1f}",
                "c": _tick_label(v),
            }
            for v in count_ticks
        ),
    )
    lag_labels = format_html_join(
        "",
        '<text class="tick tick-lag" x="{}" y="{}">{}</text>',
        ((right + 6, f"{float(y_of(v / top_lag)) + 4:.1f}", _tick_label(v)) for v in lag_ticks),
    )
    if not rows:  # the lag ticks get their own grid (dashed) when the spacing differs
        lag_labels += format_html_join(
            "",
            '<line class="grid grid-lag" x1="{}" y1="{}" x2="{}" y2="{}"/>',
            ((left, y_of(v / top_lag), right, y_of(v / top_lag)) for v in lag_ticks),
        )
    x_ticks = format_html_join(
        "",
        '<line class="axis" x1="{x}" y1="{b}" x2="{x}" y2="{b5}"/>'
        '<text class="tick tick-time" x="{x}" y="{ty}" text-anchor="middle">{label}</text>',
        (
            {
                "x": f"{left + (i + 0.5) * slot:.1f}",
                "b": bottom,
                "b5": bottom + 5,
                "ty": bottom + 18,
                "label": p.minute.strftime("%H:%M"),
            }
            for i, p in enumerate(points)
            if p.minute.minute % X_TICK_MINUTES == 0
        ),
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" id="sync-chart" role="img" '
        'viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMidYMid meet" '
        'style="max-width:{max_w}px;height:auto;display:block" '
        'aria-label="Changes applied per minute and largest lag per minute, last hour">'
        "<style>.bar{{fill:#79aec8}}.lag{{fill:none;stroke:#ba2121;stroke-width:2}}"
        ".lag-dot{{fill:#ba2121}}.axis{{stroke:#666}}.grid{{stroke:#ddd}}"
        ".grid-lag{{stroke-dasharray:3 3}}text{{font:15px sans-serif;fill:#333}}"
        ".title{{font-weight:bold}}</style>"
        "{y_ticks}{lag_labels}"
        '<line class="axis" x1="{l}" y1="{b}" x2="{r}" y2="{b}"/>'
        '<line class="axis" x1="{l}" y1="{t}" x2="{l}" y2="{b}"/>'
        '<line class="axis" x1="{r}" y1="{t}" x2="{r}" y2="{b}"/>'
        "{x_ticks}{bars}{line}{dots}"
        '<text class="title" x="{l}" y="{tt}" text-anchor="middle">changes/min</text>'
        '<text class="title" x="{r}" y="{tt}" text-anchor="middle">lag (s)</text>'
        '<text class="title" x="{cx}" y="{xt}" text-anchor="middle">time (UTC)</text>'
        "</svg>",
        w=CHART_W,
        h=CHART_H,
        max_w=CHART_W * 3 // 2,  # up to 1.5x its drawing size on wide screens
        l=left,
        r=right,
        t=top,
        b=bottom,
        tt=top - 10,
        cx=left + inner_w // 2,
        xt=CHART_H - 4,
        y_ticks=y_ticks,
        lag_labels=lag_labels,
        x_ticks=x_ticks,
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
        reconcile.reconcile_repair_request(
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
    metrics token (they tell an outsider how the service is built). `?scope=live` checks
    nothing but that the process answers (the load balancer's check)."""
    scope = request.GET.get("scope", "ready")
    if scope not in health.SCOPES:
        return JsonResponse(
            {"detail": "Bad scope.", "errors": {"scope": [f"One of: {', '.join(health.SCOPES)}."]}},
            status=400,
        )
    # Decided before the checks: a failed database check closes the connection.
    details = ops_access_allowed(request=request)
    report = health.health_check(scope=scope)
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
