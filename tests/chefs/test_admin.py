import re

import pytest

from chefs.models import Chef
from tests.factories import ChefFactory

pytestmark = pytest.mark.django_db


def test_anonymous_is_redirected_to_login(client):
    response = client.get("/admin/chefs/chef/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_non_staff_cannot_use_admin(client, user):
    client.force_login(user)
    response = client.get("/admin/chefs/chef/")
    assert response.status_code == 302


def test_changelist_and_search(client, staff_user):
    ChefFactory(first_name="Alton", last_name="Brown", chef_id="Brown#Alton")
    ChefFactory(first_name="Bobby", last_name="Flay")
    client.force_login(staff_user)
    response = client.get("/admin/chefs/chef/")
    assert response.status_code == 200
    assert b"Alton" in response.content and b"Bobby" in response.content

    response = client.get("/admin/chefs/chef/", {"q": "Brown#"})
    assert b"Alton" in response.content and b"Bobby" not in response.content

    response = client.get("/admin/chefs/chef/", {"has_key": "no"})
    assert b"Bobby" in response.content and b"Alton" not in response.content


def test_add_and_change_through_admin(client, staff_user):
    client.force_login(staff_user)
    response = client.post("/admin/chefs/chef/add/", {"first_name": "Alton", "last_name": "Brown"})
    assert response.status_code == 302
    chef = Chef.objects.get()
    response = client.post(
        f"/admin/chefs/chef/{chef.pk}/change/", {"first_name": "Alton", "last_name": "B."}
    )
    assert response.status_code == 302
    chef.refresh_from_db()
    assert chef.last_name == "B."


def test_admin_refuses_blank_and_overlong(client, staff_user):
    client.force_login(staff_user)
    response = client.post("/admin/chefs/chef/add/", {"first_name": "", "last_name": "x" * 300})
    assert response.status_code == 200  # form shown again with errors
    assert Chef.objects.count() == 0


# --- the chef page and the changelist filters (issue 16) ----------------------------------


def _key_state(chef_id: str, version: int):
    from django.utils import timezone

    from syncer.models import KeyState

    return KeyState.objects.create(
        mapping="chef", key=chef_id, sequence=1, item_version=version, applied_at=timezone.now()
    )


def test_change_page_shows_sync_state_version_and_buttons(client, staff_user):
    chef = ChefFactory(first_name="Alton", last_name="Brown", chef_id="Brown#Alton")
    _key_state("Brown#Alton", 7)
    client.force_login(staff_user)
    html = client.get(f"/admin/chefs/chef/{chef.pk}/change/").content.decode()
    assert re.search(r'field-sync_state.*?<div class="readonly">in sync</div>', html, re.S)
    assert re.search(r'field-version.*?<div class="readonly">7</div>', html, re.S)
    assert f'action="/admin/chefs/chef/{chef.pk}/publish/"' in html
    assert f'action="/admin/chefs/chef/{chef.pk}/resync/"' in html


def test_change_page_of_an_unkeyed_chef_offers_publish_only(client, staff_user):
    chef = ChefFactory(chef_id=None)
    client.force_login(staff_user)
    html = client.get(f"/admin/chefs/chef/{chef.pk}/change/").content.decode()
    assert "no key yet" in html
    assert 'id="chef-publish"' in html and 'id="chef-resync"' not in html


def test_add_page_has_no_sync_fields(client, staff_user):
    client.force_login(staff_user)
    html = client.get("/admin/chefs/chef/add/").content.decode()
    assert "field-first_name" in html
    assert "field-sync_state" not in html and 'id="chef-publish"' not in html


def test_publish_button_queues_an_outbox_entry(
    client, staff_user, django_capture_on_commit_callbacks
):
    from syncer.models import OutboxEntry

    chef = ChefFactory(chef_id="Brown#Alton")
    client.force_login(staff_user)
    url = f"/admin/chefs/chef/{chef.pk}/publish/"
    assert client.get(url).status_code == 405  # a write is a POST
    assert not OutboxEntry.objects.exists()
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0] == f"/admin/chefs/chef/{chef.pk}/change/"
    assert "Queued for publishing" in response.content.decode()
    entry = OutboxEntry.objects.get()
    assert (entry.key, entry.object_pk) == ("Brown#Alton", str(chef.pk))


@pytest.mark.usefixtures("aws")
def test_resync_button_brings_the_row_to_dynamodbs_state(client, staff_user):
    from syncer.aws import dynamodb_client

    chef = ChefFactory(first_name="Old", last_name="Name", chef_id="k")
    dynamodb_client().put_item(
        TableName="chef",
        Item={
            "ChefId": {"S": "k"},
            "firstName": {"S": "New"},
            "lastName": {"S": "Name"},
            "version": {"N": "4"},
        },
    )
    client.force_login(staff_user)
    response = client.post(f"/admin/chefs/chef/{chef.pk}/resync/", follow=True)
    assert "Re-synced from DynamoDB" in response.content.decode()
    chef.refresh_from_db()
    assert chef.first_name == "New"


def test_non_staff_cannot_use_the_buttons(client, user):
    chef = ChefFactory(chef_id="k")
    client.force_login(user)
    response = client.post(f"/admin/chefs/chef/{chef.pk}/publish/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_sync_filter_offers_in_sync_and_there_is_no_last_name_filter(client, staff_user):
    from django.utils import timezone

    from syncer.models import Conflict

    synced = ChefFactory(first_name="Synced", chef_id="a")
    unkeyed = ChefFactory(first_name="Unkeyed", chef_id=None)
    conflicted = ChefFactory(first_name="Conflicted", chef_id="c")
    Conflict.objects.create(
        mapping="chef",
        key="c",
        object_pk=str(conflicted.pk),
        kind=Conflict.Kind.choices[0][0],
        legacy_op="upsert",
        legacy_values={},
        legacy_time=timezone.now(),
    )
    client.force_login(staff_user)
    response = client.get("/admin/chefs/chef/", {"sync": "in_sync"})
    names = {c.first_name for c in response.context["cl"].result_list}
    assert names == {synced.first_name}
    assert unkeyed.first_name not in names
    titles = [spec.title for spec in response.context["cl"].filter_specs]
    assert "sync state" in titles and not any("last" in str(t) for t in titles)
    html = client.get("/admin/chefs/chef/").content.decode()
    assert "?sync=in_sync" in html


def _delete_from_another_client(chef_pk: int) -> None:
    """What the worker does when it applies a REMOVE: its own connection, committed."""
    from django.db import connection

    from tests.conftest import server_connection

    conn = server_connection()
    try:
        cur = conn.cursor()
        cur.execute(f"USE `{connection.settings_dict['NAME']}`")
        cur.execute("DELETE FROM cheftable WHERE id = %s", [chef_pk])
        conn.commit()
    finally:
        conn.close()


def test_change_of_a_chef_deleted_while_the_form_was_read_is_not_a_500(
    client, staff_user, monkeypatch, transactional_db
):
    from chefs.admin import ChefAdmin

    chef = ChefFactory(first_name="Alton", last_name="Brown")
    read = ChefAdmin.get_object

    def read_then_deleted(self, request, object_id, from_field=None):
        obj = read(self, request, object_id, from_field)
        _delete_from_another_client(chef.pk)
        return obj

    monkeypatch.setattr(ChefAdmin, "get_object", read_then_deleted)
    client.force_login(staff_user)
    response = client.post(
        f"/admin/chefs/chef/{chef.pk}/change/", {"first_name": "A", "last_name": "B"}
    )
    assert response.status_code == 302
    assert response.url == "/admin/"
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("doesn’t exist" in m or "doesn't exist" in m for m in messages), messages
    assert not Chef.objects.exists()
