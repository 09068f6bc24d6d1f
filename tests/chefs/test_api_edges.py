"""Edges of both APIs a new user meets first: unknown paths, the root, page sizes, keys."""

from urllib.parse import quote

import pytest

from tests.factories import ChefFactory

pytestmark = pytest.mark.django_db


class TestJsonNotFound:
    @pytest.mark.parametrize(
        "path",
        ["/aurora/chefs/abc", "/aurora/nothing", "/dynamo/", "/dynamo/chefs/", "/dynamo/x/y"],
    )
    @pytest.mark.parametrize("method", ["get", "post", "put", "delete"])
    def test_unknown_api_path_is_a_json_404(self, api_client, settings, path, method):
        settings.DEBUG = True  # where Django would answer its HTML debug page
        response = getattr(api_client, method)(path)
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert "detail" in response.json()

    def test_missing_row_is_still_the_views_own_json_404(self, api_client):
        response = api_client.get("/aurora/chefs/999999")
        assert response.status_code == 404 and "999999" in response.json()["detail"]


class TestRoot:
    def test_root_redirects_to_the_admin(self, client):
        response = client.get("/")
        assert response.status_code == 302 and response["Location"] == "/admin/"

    def test_favicon_is_an_icon(self, client):
        response = client.get("/favicon.ico")
        assert response.status_code == 200
        assert response["Content-Type"] == "image/x-icon"
        assert response.content[:4] == b"\x00\x00\x01\x00"  # ICO header
        assert "max-age" in response["Cache-Control"]


class TestLegacyPageSize:
    @pytest.mark.parametrize("size", ["zero", "0", "-1", "2.5", ""])
    def test_not_a_positive_integer_is_400(self, api_client, size):
        ChefFactory()
        response = api_client.get("/aurora/chefs", {"page_size": size})
        assert response.status_code == 400 and "page_size" in response.json()

    def test_above_the_maximum_is_cut(self, api_client):
        ChefFactory.create_batch(3)
        response = api_client.get("/aurora/chefs", {"page_size": "100000"})
        assert response.status_code == 200 and len(response.json()) == 3


class TestKeyInBody:
    @pytest.mark.usefixtures("aws")
    @pytest.mark.parametrize("method", ["put", "patch"])
    def test_dynamo_body_key_other_than_the_urls_is_400(self, api_client, method):
        api_client.post("/dynamo/chefs", {"chefId": "a/b", "firstName": "A"}, format="json")
        url = f"/dynamo/chefs/{quote('a/b', safe='')}"
        body = {"chefId": "other", "firstName": "X", "lastName": "Y"}
        response = getattr(api_client, method)(url, body, format="json")
        assert response.status_code == 400 and "chefId" in response.json()
        assert api_client.get(url).json()["firstName"] == "A"
        # The same key (a GET's body sent back) is accepted.
        body["chefId"] = "a/b"
        assert getattr(api_client, method)(url, body, format="json").status_code == 200

    @pytest.mark.parametrize("method", ["put", "patch"])
    def test_legacy_body_id_other_than_the_urls_is_400(self, api_client, method):
        chef = ChefFactory(first_name="A")
        other = ChefFactory()
        url = f"/aurora/chefs/{chef.id}"
        body = {"id": other.id, "firstName": "X", "lastName": "Y"}
        response = getattr(api_client, method)(url, body, format="json")
        assert response.status_code == 400 and "id" in response.json()
        chef.refresh_from_db()
        assert chef.first_name == "A"
