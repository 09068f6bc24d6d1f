"""The operator's flow in a real browser (Debian's chromium through Playwright).

A live server (this process), a real celery worker and the relay: a chef created through
/dynamo/chefs shows in the admin as in sync (its page with state, version and the Publish /
Re-sync buttons), the dashboard's applied count rises, and a poison change is fixed in its
payload editor and replayed with its page's button. Screenshots are saved in
test-artifacts/: the chef page, the failed-change page and the dashboard (at the end, with
the flow's real figures), each 800 and 1400 px wide (`*-800.png`, `*-1400.png`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import boto3
import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token

from tests.procs import ROOT, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

CHROMIUM = os.environ.get("BACKSYNC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "pw-for-tests-1"  # tests.factories.UserFactory


@pytest.fixture
def browser_page(monkeypatch):
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            yield page
        finally:
            page.screenshot(path=str(ARTIFACTS / "last-page.png"), full_page=True)
            context.close()
            browser.close()


def shot(page, name: str) -> Path:
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


WIDTHS = (800, 1400)


def shots_at_widths(page, name: str) -> None:
    """Screenshots at each width; the page must fit it (no sideways scroll)."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        shot(page, f"{name}-{width}.png")
        assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {width}px"
    page.set_viewport_size({"width": 1280, "height": 900})


def _fix_first_name(value):
    """The poison payload with its Number firstName made a String, wherever it sits."""
    if isinstance(value, dict):
        return {
            k: ({"S": v["N"]} if k == "firstName" and set(v) == {"N"} else _fix_first_name(v))
            if isinstance(v, dict | list)
            else v
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_fix_first_name(v) for v in value]
    return value


def poll_page(page, url: str, predicate, *, what: str, timeout: float = 60.0):
    """Reload `url` until predicate(page) is truthy."""

    def check():
        page.goto(url)
        return predicate(page)

    return wait_until(check, timeout=timeout, interval=0.5, what=what)


def applied_count(page) -> int:
    return int(page.locator("#card-applied .figure").get_attribute("data-value"))


def test_operator_flow_in_the_browser(live_server, worker, relay, staff_user, browser_page):
    page = browser_page
    base = live_server.url

    # Log in to the admin and open the dashboard from the index.
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", staff_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    # One Sync section on the index, the dashboard first in it.
    assert page.locator("div.app-syncer caption").count() == 1
    page.click("#syncer-syncdashboard a")
    assert page.locator("#sync-chart").count() == 1
    dashboard_url = page.url
    before = applied_count(page)
    shot(page, "dashboard-before.png")

    # Create a chef through the new API (token auth, as API clients do).
    token = Token.objects.get_or_create(user=staff_user)[0].key
    r = page.request.post(
        f"{base}/dynamo/chefs",
        data={"firstName": "Bobby", "lastName": "Flay"},
        headers={"Authorization": f"Token {token}"},
    )
    assert r.status == 201, r.text()

    # It reaches MySQL and shows in the chef list as in sync.
    row = 'tr:has(td.field-chef_id:text-is("Flay#Bobby"))'
    poll_page(
        page,
        f"{base}/admin/chefs/chef/?q=Flay",
        lambda p: p.locator(f"{row} td.field-sync_state").all_inner_texts() == ["in sync"],
        what="Flay#Bobby in sync in the chef list",
    )
    shot(page, "chefs-in-sync.png")

    # Its page: sync state, version, and the Publish / Re-sync buttons.
    page.locator(f"{row} th a").click()
    assert page.locator(".field-sync_state .readonly").inner_text() == "in sync"
    assert page.locator(".field-version .readonly").inner_text() == "1"
    assert page.locator("#chef-publish").is_visible()
    shots_at_widths(page, "chef-page")
    page.click("#chef-resync")
    assert "Re-synced from DynamoDB." in page.locator("ul.messagelist").inner_text()

    # The dashboard's applied count has risen.
    poll_page(page, dashboard_url, lambda p: applied_count(p) > before, what="applied count")

    # A poison change (firstName of the wrong type) lands in the failed-change list.
    boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL).put_item(
        TableName="chef",
        Item={"ChefId": {"S": "Bad#1"}, "firstName": {"N": "42"}, "lastName": {"S": "Poison"}},
    )
    failed_row = 'tr:has(td.field-key:text-is("Bad#1"))'
    poll_page(
        page,
        f"{base}/admin/syncer/failedchange/?status__exact=failed",
        lambda p: p.locator(failed_row).count() == 1,
        what="the poison change in the failed list",
    )
    shot(page, "failed-changes.png")

    # Fix its payload in the (pretty-printed) editor, then "Save and replay" on its page.
    page.locator(f"{failed_row} th a").click()
    payload = page.locator("#id_payload")
    text = payload.input_value()
    assert text.startswith('{\n  "'), text
    shots_at_widths(page, "failed-change")
    fixed = json.dumps(_fix_first_name(json.loads(text)), indent=2)
    assert json.loads(fixed) != json.loads(text), text
    payload.fill(fixed)
    page.click("#failed-replay")
    assert "Change replayed." in page.locator("ul.messagelist").inner_text()
    assert page.locator("#failed-replay").count() == 0
    page.goto(f"{base}/admin/syncer/failedchange/?status__exact=failed")
    assert page.locator(failed_row).count() == 0

    poll_page(
        page,
        f"{base}/admin/chefs/chef/?q=Bad",
        lambda p: (
            p.locator(
                'tr:has(td.field-chef_id:text-is("Bad#1")) td.field-sync_state'
            ).all_inner_texts()
            == ["in sync"]
        ),
        what="the replayed chef in sync",
    )

    # The dashboard at the end: real figures from this flow.
    page.goto(dashboard_url)
    assert applied_count(page) >= before + 2
    assert page.locator("#card-failed .figure").get_attribute("data-value") == "0"
    assert page.locator("tr.checkpoint-row").count() >= 1
    assert page.locator("#sync-chart rect.bar").count() >= 1
    # Readable axes: ticks on both value axes and the time axis.
    assert page.locator("#sync-chart text.tick-count").count() >= 3
    assert page.locator("#sync-chart text.tick-lag").count() >= 3
    assert page.locator("#sync-chart text.tick-time").count() >= 5
    shot(page, "dashboard.png")
    shots_at_widths(page, "dashboard")
