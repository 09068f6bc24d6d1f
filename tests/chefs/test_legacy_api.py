import pytest
from django.db import connection

from chefs.models import Chef
from tests.factories import ChefFactory

pytestmark = pytest.mark.django_db


def _raw_rows():
    with connection.cursor() as cur:
        cur.execute("SELECT id, cheffirst, cheflast FROM cheftable ORDER BY id")
        return cur.fetchall()


class TestAuth:
    @pytest.mark.parametrize(
        "method,url",
        [
            ("get", "/aurora/"),
            ("get", "/aurora/chefs"),
            ("post", "/aurora/chefs"),
            ("get", "/aurora/chefs/1"),
            ("put", "/aurora/chefs/1"),
            ("patch", "/aurora/chefs/1"),
            ("delete", "/aurora/chefs/1"),
        ],
    )
    def test_anonymous_is_refused(self, anon_client, method, url):
        response = getattr(anon_client, method)(url, {}, format="json")
        assert response.status_code == 401

    def test_bad_token_is_refused(self, anon_client):
        anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
        assert anon_client.get("/aurora/chefs").status_code == 401

    def test_session_auth_works(self, anon_client, user):
        anon_client.force_login(user)
        assert anon_client.get("/aurora/chefs").status_code == 200


class TestStatus:
    def test_reports_migrations_and_count(self, api_client):
        ChefFactory.create_batch(3)
        body = api_client.get("/aurora/").json()
        assert body["migrationsApplied"] is True
        assert body["pendingMigrations"] == []
        assert body["chefCount"] == 3
        assert body["vendor"] == "mysql"
        # Which server answered: the engine and version, as the server itself reports them.
        with connection.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = cur.fetchone()[0]
        assert body["engine"] == ("MariaDB" if "MariaDB" in version else "MySQL")
        assert body["serverVersion"] == version.split("-")[0]
        assert body["serverVersion"].count(".") == 2


class TestCreate:
    def test_create_writes_the_legacy_row(self, api_client):
        response = api_client.post(
            "/aurora/chefs", {"firstName": "Alton", "lastName": "Brown"}, format="json"
        )
        assert response.status_code == 201
        body = response.json()
        assert body["firstName"] == "Alton" and body["lastName"] == "Brown"
        assert _raw_rows() == ((body["id"], "Alton", "Brown"),)

    @pytest.mark.parametrize(
        "payload,expected",
        [
            ({}, ("Gordon", "Ramsay")),
            ({"firstName": "Alton"}, ("Alton", "Ramsay")),
            ({"lastName": "Flay"}, ("Gordon", "Flay")),
        ],
    )
    def test_missing_fields_default_like_the_legacy_api(self, api_client, payload, expected):
        response = api_client.post("/aurora/chefs", payload, format="json")
        assert response.status_code == 201
        assert (response.json()["firstName"], response.json()["lastName"]) == expected

    def test_names_are_trimmed_and_unicode_kept(self, api_client):
        response = api_client.post(
            "/aurora/chefs", {"firstName": "  Renée ", "lastName": "Dupré"}, format="json"
        )
        assert response.status_code == 201
        assert Chef.objects.get().first_name == "Renée"

    @pytest.mark.parametrize(
        "payload,field",
        [
            ({"firstName": 42}, "firstName"),
            ({"firstName": None}, "firstName"),
            ({"lastName": ["Brown"]}, "lastName"),
            ({"lastName": {"x": 1}}, "lastName"),
            ({"firstName": True}, "firstName"),
            ({"firstName": ""}, "firstName"),
            ({"firstName": "   "}, "firstName"),
            ({"lastName": "x" * 256}, "lastName"),
        ],
    )
    def test_bad_fields_get_400_with_field_errors(self, api_client, payload, field):
        response = api_client.post("/aurora/chefs", payload, format="json")
        assert response.status_code == 400
        assert field in response.json()
        assert Chef.objects.count() == 0

    def test_255_characters_is_accepted(self, api_client):
        response = api_client.post("/aurora/chefs", {"lastName": "x" * 255}, format="json")
        assert response.status_code == 201

    def test_malformed_json_gets_400(self, api_client):
        response = api_client.post(
            "/aurora/chefs", data='{"firstName": ', content_type="application/json"
        )
        assert response.status_code == 400
        assert "body" in response.json()["errors"]

    def test_json_that_is_not_an_object_gets_400(self, api_client):
        response = api_client.post("/aurora/chefs", data="[1, 2]", content_type="application/json")
        assert response.status_code == 400

    def test_unknown_content_type_gets_400(self, api_client):
        response = api_client.post(
            "/aurora/chefs", data="firstName=Alton", content_type="text/plain"
        )
        assert response.status_code == 400
        assert "body" in response.json()["errors"]
        assert Chef.objects.count() == 0


class TestList:
    def test_empty(self, api_client):
        response = api_client.get("/aurora/chefs")
        assert response.status_code == 200
        assert response.json() == []
        assert response["X-Total-Count"] == "0"

    def test_pages_in_stable_order(self, api_client):
        chefs = ChefFactory.create_batch(7)
        ids = []
        url = "/aurora/chefs?page_size=3"
        pages = 0
        while url:
            response = api_client.get(url)
            assert response.status_code == 200
            ids += [row["id"] for row in response.json()]
            pages += 1
            link = response.headers.get("Link", "")
            nxt = [p for p in link.split(", ") if 'rel="next"' in p]
            url = nxt[0].split(";")[0].strip("<>") if nxt else None
        assert pages == 3
        assert ids == [c.id for c in chefs]
        assert response["X-Total-Count"] == "7"

    def test_page_out_of_range_is_404(self, api_client):
        assert api_client.get("/aurora/chefs?page=99").status_code == 404


class TestDetail:
    def test_get(self, api_client):
        chef = ChefFactory(first_name="Alton", last_name="Brown")
        body = api_client.get(f"/aurora/chefs/{chef.id}").json()
        assert body == {"id": chef.id, "firstName": "Alton", "lastName": "Brown", "chefId": None}

    @pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
    def test_missing_id_is_404(self, api_client, method):
        response = getattr(api_client, method)(
            "/aurora/chefs/999999", {"firstName": "A", "lastName": "B"}, format="json"
        )
        assert response.status_code == 404

    def test_put_replaces_both_names(self, api_client):
        chef = ChefFactory(first_name="Alton", last_name="Brown")
        response = api_client.put(
            f"/aurora/chefs/{chef.id}", {"firstName": "Bobby", "lastName": "Flay"}, format="json"
        )
        assert response.status_code == 200
        assert _raw_rows() == ((chef.id, "Bobby", "Flay"),)

    def test_put_on_a_chef_deleted_meanwhile_is_404(self, api_client, monkeypatch):
        from chefs.api import legacy

        chef = ChefFactory(first_name="Alton", last_name="Brown")
        read = legacy._get_or_404

        def read_then_deleted(chef_pk):
            found = read(chef_pk)
            Chef.objects.filter(pk=chef_pk).delete()  # the worker applied a REMOVE meanwhile
            return found

        monkeypatch.setattr(legacy, "_get_or_404", read_then_deleted)
        response = api_client.put(
            f"/aurora/chefs/{chef.id}", {"firstName": "Bobby", "lastName": "Flay"}, format="json"
        )
        assert response.status_code == 404
        assert "deleted" in response.json()["detail"]
        assert _raw_rows() == ()

    def test_put_needs_both_names(self, api_client):
        chef = ChefFactory(first_name="Alton", last_name="Brown")
        response = api_client.put(f"/aurora/chefs/{chef.id}", {"firstName": "B"}, format="json")
        assert response.status_code == 400
        assert "lastName" in response.json()

    def test_patch_changes_one_name(self, api_client):
        chef = ChefFactory(first_name="Alton", last_name="Brown")
        response = api_client.patch(f"/aurora/chefs/{chef.id}", {"lastName": "B."}, format="json")
        assert response.status_code == 200
        assert _raw_rows() == ((chef.id, "Alton", "B."),)

    def test_patch_bad_value_is_400_and_changes_nothing(self, api_client):
        chef = ChefFactory(first_name="Alton", last_name="Brown")
        response = api_client.patch(f"/aurora/chefs/{chef.id}", {"lastName": 7}, format="json")
        assert response.status_code == 400
        assert _raw_rows() == ((chef.id, "Alton", "Brown"),)

    def test_delete(self, api_client):
        chef = ChefFactory()
        assert api_client.delete(f"/aurora/chefs/{chef.id}").status_code == 204
        assert _raw_rows() == ()


class TestSchema:
    def test_schema_lists_legacy_operations(self, api_client):
        response = api_client.get("/api/schema/", HTTP_ACCEPT="application/json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        assert {"/aurora/chefs", "/aurora/chefs/{chef_pk}", "/aurora/"} <= set(paths)

    def test_docs_use_local_assets(self, api_client):
        response = api_client.get("/api/docs/")
        assert response.status_code == 200
        html = response.content.decode()
        assert "swagger-ui" in html
        assert "cdn." not in html and "unpkg" not in html


class TestOutbox:
    """Every legacy write records what the outbox publishes (tests/syncer/outbox/)."""

    def test_writes_record_outbox_entries(self, api_client):
        from syncer.models import OutboxEntry

        body = api_client.post(
            "/aurora/chefs", {"firstName": "A", "lastName": "B"}, format="json"
        ).json()
        api_client.patch(
            f"/aurora/chefs/{body['id']}", {"lastName": "C", "version": 3}, format="json"
        )
        api_client.delete(f"/aurora/chefs/{body['id']}")
        entries = list(OutboxEntry.objects.order_by("pk").values_list("op", "values"))
        assert entries == [
            ("upsert", {"firstName": "A", "lastName": "B"}),
            ("upsert", {"firstName": "A", "lastName": "C"}),
            ("delete", {"firstName": "A", "lastName": "C"}),
        ]

    def test_bad_version_is_400(self, api_client):
        chef = ChefFactory()
        response = api_client.patch(f"/aurora/chefs/{chef.id}", {"version": "x"}, format="json")
        assert response.status_code == 400 and "version" in response.json()
