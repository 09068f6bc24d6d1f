import json

import pytest

from syncer.models import FailedChange
from syncer.pipeline.apply import changes_apply
from tests.syncer.conftest import gadget_change
from tests.testapp.models import Gadget

pytestmark = pytest.mark.django_db


@pytest.fixture
def poisoned(gadget_mapping):
    change = gadget_change("p", "INSERT", 5, name="x" * 30)
    changes_apply(changes=[change])
    return FailedChange.objects.get(event_id=change["id"])


def test_admin_lists_failed_changes_with_error(client, staff_user, poisoned):
    client.force_login(staff_user)
    page = client.get("/admin/syncer/failedchange/").content.decode()
    assert (
        poisoned.event_id
        in client.get(f"/admin/syncer/failedchange/{poisoned.pk}/change/").content.decode()
    )
    assert "at most 20 characters" in page


def test_replay_of_unfixed_change_fails_again(client, staff_user, poisoned):
    client.force_login(staff_user)
    client.post(
        "/admin/syncer/failedchange/",
        {"action": "replay", "_selected_action": [poisoned.pk]},
    )
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.FAILED
    assert poisoned.attempts == 2
    assert not Gadget.objects.exists()


def test_replay_of_fixed_change_applies_it(client, staff_user, poisoned):
    payload = dict(poisoned.payload)
    payload["image"] = {**payload["image"], "name": {"S": "fixed"}}
    poisoned.payload = payload
    poisoned.save()
    client.force_login(staff_user)
    response = client.post(
        "/admin/syncer/failedchange/",
        {"action": "replay", "_selected_action": [poisoned.pk]},
        follow=True,
    )
    assert "1 change(s) replayed" in response.content.decode()
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.REPLAYED
    assert Gadget.objects.get(sku="p").name == "fixed"


def test_discard(client, staff_user, poisoned):
    client.force_login(staff_user)
    client.post(
        "/admin/syncer/failedchange/",
        {"action": "discard", "_selected_action": [poisoned.pk]},
    )
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.DISCARDED
    assert poisoned.resolved_at is not None


# --- the change page: pretty payload editor, Replay and Discard buttons (issue 16) -----------


def _change_url(failed: FailedChange) -> str:
    return f"/admin/syncer/failedchange/{failed.pk}/change/"


def test_change_page_pretty_prints_the_payload_and_has_the_buttons(client, staff_user, poisoned):
    client.force_login(staff_user)
    response = client.get(_change_url(poisoned))
    html = response.content.decode()
    assert 'name="_replay"' in html and 'name="_discard"' in html
    # The text the textarea shows (BoundField.value() is the field's prepare_value()).
    shown = response.context["adminform"].form["payload"].value()
    assert shown.startswith('{\n  "')  # indented, one attribute per line
    assert '\n  "image": {\n' in shown
    assert json.loads(shown) == poisoned.payload


def _form_data(failed: FailedChange, payload: dict, button: str) -> dict:
    return {"payload": json.dumps(payload), button: "1"}


def test_save_and_replay_applies_the_edited_payload(client, staff_user, poisoned):
    payload = dict(poisoned.payload)
    payload["image"] = {**payload["image"], "name": {"S": "fixed"}}
    client.force_login(staff_user)
    response = client.post(
        _change_url(poisoned), _form_data(poisoned, payload, "_replay"), follow=True
    )
    assert response.redirect_chain[-1][0] == _change_url(poisoned)
    assert "Change replayed." in response.content.decode()
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.REPLAYED
    assert Gadget.objects.get(sku="p").name == "fixed"
    # Resolved: no more Replay / Discard buttons.
    assert 'name="_replay"' not in response.content.decode()


def test_replay_of_an_unfixed_payload_shows_the_new_error(client, staff_user, poisoned):
    client.force_login(staff_user)
    response = client.post(
        _change_url(poisoned), _form_data(poisoned, poisoned.payload, "_replay"), follow=True
    )
    assert "Replay failed again" in response.content.decode()
    assert "at most 20 characters" in response.content.decode()
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.FAILED and poisoned.attempts == 2


def test_discard_button(client, staff_user, poisoned):
    client.force_login(staff_user)
    response = client.post(
        _change_url(poisoned), _form_data(poisoned, poisoned.payload, "_discard"), follow=True
    )
    assert response.redirect_chain[-1][0] == "/admin/syncer/failedchange/"
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.DISCARDED


def test_invalid_json_is_a_form_error_and_kept_for_correction(client, staff_user, poisoned):
    client.force_login(staff_user)
    response = client.post(_change_url(poisoned), {"payload": '{"a": ', "_replay": "1"})
    assert response.status_code == 200
    assert "Enter a valid JSON" in response.content.decode()
    assert "{&quot;a&quot;: </textarea>" in response.content.decode()
    poisoned.refresh_from_db()
    assert poisoned.status == FailedChange.Status.FAILED
