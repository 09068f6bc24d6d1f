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
