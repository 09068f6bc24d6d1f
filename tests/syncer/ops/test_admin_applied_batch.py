"""The applied-change log in the admin (AppliedBatchAdmin): batches listed, found by a key or
an event id inside their entries, each batch's changes shown escaped, read-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chefs.roles import READERS, SYNC_OPERATORS
from tests.factories import AppliedBatchFactory, UserFactory, user_with_roles

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/syncer/appliedbatch/"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def change_url(batch) -> str:
    return f"{CHANGELIST}{batch.pk}/change/"


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def batches():
    first = AppliedBatchFactory(
        applied_at=T0,
        entries=[
            ["evt-alpha-1", "key-alpha", "11", "INSERT", "applied", 0.25],
            ["evt-alpha-2", "<b>x</b>", "12", "MODIFY", "stale", None],
        ],
    )
    second = AppliedBatchFactory(
        applied_at=T0 + timedelta(minutes=1),
        mapping="gadget",
        entries=[["evt-beta-1", "key-beta", "98765432109876543210", "REMOVE", "applied", 1.5]],
    )
    third = AppliedBatchFactory(applied_at=T0 + timedelta(minutes=2), seconds=[0.1, 0.2])
    return first, second, third


def listed(response) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


def test_the_changelist_lists_the_batches(admin_client, batches):
    r = admin_client.get(CHANGELIST)
    assert r.status_code == 200
    assert listed(r) == {b.pk for b in batches}
    for batch in batches:
        assert change_url(batch).encode() in r.content


@pytest.mark.parametrize(
    ("query", "index"),
    [("key-alpha", 0), ("key-beta", 1), ("evt-alpha-2", 0), ("evt-beta-1", 1)],
)
def test_search_finds_only_the_batch_holding_a_key_or_an_event_id(
    admin_client, batches, query, index
):
    r = admin_client.get(CHANGELIST, {"q": query})
    assert r.status_code == 200
    assert listed(r) == {batches[index].pk}


def test_search_for_what_no_batch_holds_finds_none(admin_client, batches):
    r = admin_client.get(CHANGELIST, {"q": "key-gamma"})
    assert r.status_code == 200
    assert listed(r) == set()


def test_the_change_page_shows_every_entry_escaped(admin_client, batches):
    first, second, _ = batches
    r = admin_client.get(change_url(first))
    assert r.status_code == 200
    html = r.content.decode()
    for name in ("event id", "key", "sequence", "event", "outcome", "lag"):
        assert f"<th>{name}</th>" in html
    assert (
        "<tr><td>evt-alpha-1</td><td>key-alpha</td><td>11</td><td>INSERT</td>"
        "<td>applied</td><td>0.25</td></tr>"
    ) in html
    assert (
        "<tr><td>evt-alpha-2</td><td>&lt;b&gt;x&lt;/b&gt;</td><td>12</td><td>MODIFY</td>"
        "<td>stale</td><td>None</td></tr>"
    ) in html
    assert "<b>x</b>" not in html
    # Another batch's changes are not on this page.
    assert "evt-beta-1" not in html

    r = admin_client.get(change_url(second))
    assert "<td>evt-beta-1</td><td>key-beta</td><td>98765432109876543210</td>" in (
        r.content.decode()
    )


def test_the_change_page_is_read_only(admin_client, batches):
    first = batches[0]
    r = admin_client.get(change_url(first))
    assert r.status_code == 200
    html = r.content.decode()
    assert 'name="_save"' not in html
    assert 'name="_continue"' not in html
    assert "/delete/" not in html
    assert r.context["has_change_permission"] is False
    assert r.context["has_delete_permission"] is False
    assert r.context["has_add_permission"] is False
    # A POST changes nothing (view-only), and there is no delete page.
    admin_client.post(change_url(first), {"mapping": "other"})
    first.refresh_from_db()
    assert first.mapping == "chef"
    assert admin_client.get(f"{CHANGELIST}{first.pk}/delete/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


def test_sync_operators_may_view_the_log(client, batches):
    client.force_login(user_with_roles(SYNC_OPERATORS, username="operator", is_staff=True))
    r = client.get(CHANGELIST)
    assert r.status_code == 200
    assert listed(r) == {b.pk for b in batches}
    assert client.get(change_url(batches[0])).status_code == 200


def test_readers_may_not(client, batches):
    client.force_login(user_with_roles(READERS, username="reader", is_staff=True))
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_url(batches[0])).status_code == 403


@pytest.mark.parametrize("key", ["café", 'say"hi'])
def test_search_finds_a_key_with_non_ascii_or_a_quote(admin_client, key):
    batch = AppliedBatchFactory(entries=[["evt-odd", key, "1", "MODIFY", "applied", 0.1]])
    AppliedBatchFactory(seconds=[0.1])
    r = admin_client.get(CHANGELIST, {"q": key})
    assert listed(r) == {batch.pk}


def test_search_finds_a_key_inside_a_large_compressed_batch_ignoring_case(admin_client):
    entries = [[f"evt-{i}", f"Key-{i:03d}", str(i), "MODIFY", "applied", 0.1] for i in range(100)]
    batch = AppliedBatchFactory(entries=entries)
    AppliedBatchFactory(seconds=[0.1] * 100)
    assert listed(admin_client.get(CHANGELIST, {"q": "key-057"})) == {batch.pk}
    assert listed(admin_client.get(CHANGELIST, {"q": "EVT-99"})) == {batch.pk}
    assert listed(admin_client.get(CHANGELIST, {"q": "key-100"})) == set()
    r = admin_client.get(change_url(batch))
    assert "<td>evt-57</td><td>Key-057</td>" in r.content.decode()
