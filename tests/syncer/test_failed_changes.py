import pytest

from syncer.apply import changes_apply
from syncer.models import FailedChange
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
