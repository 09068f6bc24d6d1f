"""The operator's flow in a real browser (Debian's chromium through Playwright).

A live server (this process), a real celery worker and the relay: a chef created through
/dynamo/chefs shows in the admin as in sync, the dashboard's applied count rises, and a
poison change is fixed and replayed from the failed-change list. Screenshots are saved in
test-artifacts/ (dashboard.png is the dashboard at the end, with the flow's real figures).
"""

from __future__ import annotations

import os
import re
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
    page.click("#sync-dashboard-link")
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

    # Fix its payload in the change form, then replay it from the list.
    page.locator(f"{failed_row} th a").click()
    payload = page.locator("#id_payload")
    text = payload.input_value()
    fixed = re.sub(r'"firstName": \{"N": "42"\}', '"firstName": {"S": "42"}', text)
    assert fixed != text, text
    payload.fill(fixed)
    page.click("input[name=_save]")
    page.goto(f"{base}/admin/syncer/failedchange/?status__exact=failed")
    page.locator(f"{failed_row} input.action-select").check()
    page.select_option("select[name=action]", "replay")
    page.click("button[name=index]")
    assert "1 change(s) replayed." in page.locator("ul.messagelist").inner_text()
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
    shot(page, "dashboard.png")
