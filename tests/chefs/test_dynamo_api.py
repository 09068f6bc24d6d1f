import re
from urllib.parse import quote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chefs.dynamo import ChefItem
from chefs.models import Chef
from syncer import aws as syncer_aws
from tests.plugins.aws import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("aws")]

URL = "/dynamo/chefs"


def detail(chef_id: str) -> str:
    return f"{URL}/{quote(chef_id, safe='')}"


def raw_item(chef_id: str) -> dict | None:
    """The item as DynamoDB holds it, read with boto3 (not through the code under test)."""
    return (
        syncer_aws.dynamodb_client()
        .get_item(TableName="chef", Key={"ChefId": {"S": chef_id}}, ConsistentRead=True)
        .get("Item")
    )


def next_link(response) -> str | None:
    match = re.search(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
    return match.group(1) if match else None


class TestAuth:
    @pytest.mark.parametrize(
        "method,url",
        [
            ("get", URL),
            ("post", URL),
            ("get", f"{URL}/x"),
            ("put", f"{URL}/x"),
            ("patch", f"{URL}/x"),
            ("delete", f"{URL}/x"),
        ],
    )
    def test_anonymous_is_refused(self, anon_client, method, url):
        assert getattr(anon_client, method)(url, {}, format="json").status_code == 401

    def test_session_auth_works(self, anon_client, user):
        anon_client.force_login(user)
        assert anon_client.get(URL).status_code == 200


class TestCreate:
    def test_create_derives_the_key_and_writes_dynamodb(self, api_client):
        response = api_client.post(URL, {"firstName": "Bobby", "lastName": "Flay"}, format="json")
        assert response.status_code == 201
        assert response.json() == {
            "chefId": "Flay#Bobby",
            "firstName": "Bobby",
            "lastName": "Flay",
            "version": 1,
        }
        assert raw_item("Flay#Bobby") == {
            "ChefId": {"S": "Flay#Bobby"},
            "firstName": {"S": "Bobby"},
            "lastName": {"S": "Flay"},
            "version": {"N": "1"},
        }

    @pytest.mark.parametrize(
        "payload,expected",
        [
            ({}, ("Gordon", "Ramsay")),
            ({"firstName": "Alton"}, ("Alton", "Ramsay")),
            ({"lastName": "Flay"}, ("Gordon", "Flay")),
        ],
    )
    def test_missing_fields_default_like_the_legacy_api(self, api_client, payload, expected):
        response = api_client.post(URL, payload, format="json")
        assert response.status_code == 201
        body = response.json()
        assert (body["firstName"], body["lastName"]) == expected
        assert body["chefId"] == f"{expected[1]}#{expected[0]}"

    def test_posting_the_same_name_again_updates_one_item(self, api_client):
        first = api_client.post(URL, {"firstName": "Bobby", "lastName": "Flay"}, format="json")
        again = api_client.post(URL, {"firstName": "Bobby", "lastName": "Flay"}, format="json")
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["version"] == 2
        scanned = syncer_aws.dynamodb_client().scan(TableName="chef")["Items"]
        assert len(scanned) == 1

    def test_explicit_key_is_used_and_existing_key_updated(self, api_client):
        key = "chef/42 #Renée"
        created = api_client.post(
            URL, {"chefId": key, "firstName": "Renée", "lastName": "Dupré"}, format="json"
        )
        assert created.status_code == 201 and created.json()["chefId"] == key
        updated = api_client.post(
            URL, {"chefId": key, "firstName": "Renée", "lastName": "Redzepi"}, format="json"
        )
        assert updated.status_code == 200
        assert raw_item(key)["lastName"] == {"S": "Redzepi"}
        assert raw_item(key)["version"] == {"N": "2"}

    def test_post_on_an_item_without_version_is_an_update(self, api_client):
        # Items written before this API (the original one) carry no version attribute.
        syncer_aws.dynamodb_client().put_item(
            TableName="chef",
            Item={"ChefId": {"S": "Brown#Alton"}, "firstName": {"S": "Alton"}},
        )
        response = api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")
        assert response.status_code == 200
        assert raw_item("Brown#Alton")["lastName"] == {"S": "Brown"}

    def test_names_are_trimmed_but_explicit_keys_kept(self, api_client):
        response = api_client.post(
            URL,
            {"chefId": " spaced key ", "firstName": "  Renée ", "lastName": "Dupré"},
            format="json",
        )
        assert response.status_code == 201
        assert response.json()["firstName"] == "Renée"
        assert raw_item(" spaced key ") is not None

    def test_nothing_is_written_to_mysql(self, api_client):
        with CaptureQueriesContext(connection) as queries:
            api_client.post(URL, {"firstName": "Bobby", "lastName": "Flay"}, format="json")
            api_client.put(
                detail("Flay#Bobby"), {"firstName": "B", "lastName": "Flay"}, format="json"
            )
            api_client.delete(detail("Flay#Bobby"))
        writes = [
            q["sql"]
            for q in queries.captured_queries
            if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))
        ]
        assert writes == []
        assert Chef.objects.count() == 0


class TestBadInput:
    @pytest.mark.parametrize(
        "payload,field",
        [
            ({"firstName": ""}, "firstName"),
            ({"firstName": "   "}, "firstName"),
            ({"lastName": 42}, "lastName"),
            ({"firstName": None}, "firstName"),
            ({"firstName": "x" * 256}, "firstName"),
            ({"chefId": ""}, "chefId"),
            ({"chefId": ["a"]}, "chefId"),
            ({"chefId": "k" * 256}, "chefId"),
            # The derived key would not fit the legacy key column (255).
            ({"firstName": "f" * 200, "lastName": "l" * 200}, "lastName"),
        ],
    )
    def test_invalid_fields_get_400_with_field_errors(self, api_client, payload, field):
        response = api_client.post(URL, payload, format="json")
        assert response.status_code == 400
        assert field in response.json()
        assert syncer_aws.dynamodb_client().scan(TableName="chef")["Items"] == []

    def test_unparseable_body_is_400(self, api_client):
        response = api_client.generic("POST", URL, "{not json", content_type="application/json")
        assert response.status_code == 400

    def test_non_object_body_is_400(self, api_client):
        assert api_client.post(URL, ["a"], format="json").status_code == 400

    @pytest.mark.parametrize("version", ["x", -1, 1.5])
    def test_bad_version_is_400(self, api_client, version):
        api_client.post(URL, {"chefId": "k"}, format="json")
        response = api_client.patch(detail("k"), {"version": version}, format="json")
        assert response.status_code == 400 and "version" in response.json()

    def test_bad_delete_version_is_400(self, api_client):
        assert api_client.delete(detail("k") + "?version=abc").status_code == 400

    @pytest.mark.parametrize(
        "cursor",
        ["!!!", "bm90IGpzb24", "eyJDaGVmSWQiOjF9", "eyJvdGhlciI6eyJTIjoieCJ9fQ", "W10"],
    )
    def test_bad_cursor_is_400(self, api_client, cursor):
        response = api_client.get(URL, {"cursor": cursor})
        assert response.status_code == 400
        assert "cursor" in response.json()


class TestDetail:
    @pytest.mark.parametrize(
        "key",
        ["Brown#Alton", "a/b", "a/b/", "with space", "Dupré#Renée", "東京#寿司", "100%", "a?b=c"],
    )
    def test_keys_round_trip_url_encoded(self, api_client, key):
        assert api_client.post(URL, {"chefId": key}, format="json").status_code == 201
        got = api_client.get(detail(key))
        assert got.status_code == 200
        assert got.json()["chefId"] == key
        patched = api_client.patch(detail(key), {"firstName": "New"}, format="json")
        assert patched.status_code == 200 and patched.json()["chefId"] == key
        assert raw_item(key)["firstName"] == {"S": "New"}
        assert api_client.delete(detail(key)).status_code == 204
        assert raw_item(key) is None

    def test_missing_is_404_on_every_method(self, api_client):
        url = detail("No#Body")
        assert api_client.get(url).status_code == 404
        body = {"firstName": "A", "lastName": "B"}
        assert api_client.put(url, body, format="json").status_code == 404
        assert api_client.patch(url, {"firstName": "A"}, format="json").status_code == 404
        assert api_client.patch(url, {}, format="json").status_code == 404
        assert api_client.delete(url).status_code == 404
        assert api_client.delete(url + "?version=1").status_code == 404
        # An update must not create the item.
        assert raw_item("No#Body") is None

    def test_put_requires_both_names_patch_does_not(self, api_client):
        api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")
        url = detail("Brown#Alton")
        put = api_client.put(url, {"firstName": "Al"}, format="json")
        assert put.status_code == 400 and "lastName" in put.json()
        patch = api_client.patch(url, {"firstName": "Al"}, format="json")
        assert patch.status_code == 200
        assert patch.json() == {
            "chefId": "Brown#Alton",
            "firstName": "Al",
            "lastName": "Brown",
            "version": 2,
        }

    def test_update_keeps_the_key(self, api_client):
        api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")
        response = api_client.put(
            detail("Brown#Alton"), {"firstName": "Bobby", "lastName": "Flay"}, format="json"
        )
        assert response.json()["chefId"] == "Brown#Alton"
        assert raw_item("Flay#Bobby") is None


class TestVersionConflict:
    def test_current_version_is_accepted(self, api_client):
        api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")
        response = api_client.put(
            detail("Brown#Alton"),
            {"firstName": "Al", "lastName": "Brown", "version": 1},
            format="json",
        )
        assert response.status_code == 200 and response.json()["version"] == 2

    def test_stale_version_gets_409_with_current_item(self, api_client):
        api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")
        api_client.patch(detail("Brown#Alton"), {"firstName": "Al"}, format="json")  # v2
        response = api_client.put(
            detail("Brown#Alton"),
            {"firstName": "Stale", "lastName": "Brown", "version": 1},
            format="json",
        )
        assert response.status_code == 409
        body = response.json()
        assert body["current"] == {
            "chefId": "Brown#Alton",
            "firstName": "Al",
            "lastName": "Brown",
            "version": 2,
        }
        assert "detail" in body
        assert raw_item("Brown#Alton")["firstName"] == {"S": "Al"}

    def test_stale_version_on_empty_patch_is_409(self, api_client):
        api_client.post(URL, {"chefId": "k"}, format="json")
        assert api_client.patch(detail("k"), {"version": 5}, format="json").status_code == 409
        assert api_client.patch(detail("k"), {"version": 1}, format="json").status_code == 200

    def test_delete_with_stale_version_is_409_and_keeps_the_item(self, api_client):
        api_client.post(URL, {"chefId": "k"}, format="json")
        api_client.post(URL, {"chefId": "k"}, format="json")  # v2
        response = api_client.delete(detail("k") + "?version=1")
        assert response.status_code == 409
        assert response.json()["current"]["version"] == 2
        assert raw_item("k") is not None
        assert api_client.delete(detail("k") + "?version=2").status_code == 204
        assert raw_item("k") is None


class TestList:
    def test_empty(self, api_client):
        response = api_client.get(URL)
        assert response.status_code == 200
        assert response.json() == []
        assert "Link" not in response.headers

    def test_pages_cover_every_item_once(self, api_client):
        keys = {f"Chef{i:02d}#First" for i in range(23)}
        client = syncer_aws.dynamodb_client()
        for key in keys:
            client.put_item(
                TableName="chef",
                Item={"ChefId": {"S": key}, "firstName": {"S": "F"}, "lastName": {"S": "L"}},
            )
        seen, pages, url = [], 0, f"{URL}?page_size=5"
        while url:
            response = api_client.get(url)
            assert response.status_code == 200
            body = response.json()
            assert 0 < len(body) <= 5
            seen += [c["chefId"] for c in body]
            pages += 1
            url = next_link(response)
            assert pages <= 10
        assert pages == 5
        assert len(seen) == len(keys) and set(seen) == keys

    def test_exactly_full_last_page_has_no_next(self, api_client):
        for i in range(4):
            api_client.post(URL, {"chefId": f"k{i}"}, format="json")
        first = api_client.get(URL, {"page_size": 2})
        second = api_client.get(next_link(first))
        assert len(second.json()) == 2
        assert next_link(second) is None

    def test_cursor_is_opaque_and_keeps_page_size(self, api_client):
        for i in range(3):
            api_client.post(URL, {"chefId": f"Brown#Alton{i}"}, format="json")
        link = next_link(api_client.get(URL, {"page_size": 1}))
        assert "page_size=1" in link
        cursor = re.search(r"cursor=([^&]+)", link).group(1)
        assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
        assert "Alton" not in cursor

    @pytest.mark.parametrize("size", ["zero", "0", "-3", "1.5", ""])
    def test_page_size_that_is_not_a_positive_integer_is_400(self, api_client, size):
        api_client.post(URL, {"chefId": "k"}, format="json")
        response = api_client.get(URL, {"page_size": size})
        assert response.status_code == 400 and "page_size" in response.json()

    def test_page_size_above_the_maximum_is_cut(self, api_client):
        api_client.post(URL, {"chefId": "k"}, format="json")
        assert api_client.get(URL, {"page_size": "100000"}).status_code == 200


class TestUnavailable:
    @pytest.fixture
    def dynamo_down(self, settings):
        """The model pointed at a loopback port where nothing listens."""
        settings.DYNAMO_MAX_RETRIES = 0
        closed = f"http://127.0.0.1:{free_port()}"
        ChefItem.Meta.max_retry_attempts = 0
        syncer_aws.dynamo_model_reconnect(ChefItem, host=closed)
        yield
        ChefItem.Meta.max_retry_attempts = settings.DYNAMO_MAX_RETRIES
        syncer_aws.dynamo_model_reconnect(ChefItem)

    @pytest.mark.parametrize(
        "method,url,body",
        [
            ("get", URL, None),
            ("post", URL, {"firstName": "A"}),
            ("get", f"{URL}/k", None),
            ("put", f"{URL}/k", {"firstName": "A", "lastName": "B"}),
            ("patch", f"{URL}/k", {"firstName": "A"}),
            ("delete", f"{URL}/k", None),
        ],
    )
    def test_endpoint_down_is_503_with_retry_after(
        self, api_client, dynamo_down, method, url, body
    ):
        response = getattr(api_client, method)(url, body, format="json")
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "detail" in response.json()

    def test_recovers_when_the_endpoint_is_back(self, api_client, dynamo_down):
        assert api_client.get(URL).status_code == 503
        syncer_aws.dynamo_model_reconnect(ChefItem)
        assert api_client.get(URL).status_code == 200


class TestSchema:
    def test_openapi_documents_the_dynamo_api(self, api_client):
        schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        paths = schema["paths"]
        assert set(paths[URL]) >= {"get", "post"}
        detail_path = next(p for p in paths if p.startswith(f"{URL}/"))
        assert set(paths[detail_path]) >= {"get", "put", "patch", "delete"}
        assert "409" in paths[detail_path]["put"]["responses"]
        assert "503" in paths[URL]["get"]["responses"]


class TestStream:
    def _records(self) -> list[dict]:
        arn = syncer_aws.dynamodb_client().describe_table(TableName="chef")["Table"][
            "LatestStreamArn"
        ]
        streams = syncer_aws.streams_client()
        records = []
        for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            records += streams.get_records(ShardIterator=iterator)["Records"]
        return records

    def test_each_api_write_is_one_stream_record_with_full_images(self, api_client):
        api_client.post(URL, {"firstName": "Bobby", "lastName": "Flay"}, format="json")
        api_client.patch(detail("Flay#Bobby"), {"firstName": "Bob"}, format="json")
        api_client.delete(detail("Flay#Bobby"))
        records = self._records()
        assert [r["eventName"] for r in records] == ["INSERT", "MODIFY", "REMOVE"]
        insert, modify, remove = (r["dynamodb"] for r in records)
        key = {"ChefId": {"S": "Flay#Bobby"}}
        assert insert["Keys"] == modify["Keys"] == remove["Keys"] == key
        assert insert["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert insert["NewImage"] == {
            **key,
            "firstName": {"S": "Bobby"},
            "lastName": {"S": "Flay"},
            "version": {"N": "1"},
        }
        assert modify["OldImage"]["firstName"] == {"S": "Bobby"}
        assert modify["NewImage"]["firstName"] == {"S": "Bob"}
        assert modify["NewImage"]["version"] == {"N": "2"}
        assert remove["OldImage"]["version"] == {"N": "2"}


def put_raw(item: dict) -> None:
    """An item written directly, as another service would, bypassing this API."""
    syncer_aws.dynamodb_client().put_item(TableName="chef", Item=item)


GOOD = {"ChefId": {"S": "Good#One"}, "firstName": {"S": "One"}, "lastName": {"S": "Good"}}
# Each wrong shape another writer can leave in the table, and the attribute it is wrong in.
FOREIGN = {
    "number name": (
        {"ChefId": {"S": "k"}, "firstName": {"N": "42"}, "lastName": {"S": "L"}},
        "firstName",
    ),
    "missing name": ({"ChefId": {"S": "k"}, "firstName": {"S": "F"}}, "lastName"),
    "over-long name": (
        {"ChefId": {"S": "k"}, "firstName": {"S": "x" * 256}, "lastName": {"S": "L"}},
        "firstName",
    ),
    "text version": (
        {
            "ChefId": {"S": "k"},
            "firstName": {"S": "F"},
            "lastName": {"S": "L"},
            "version": {"S": "x"},
        },
        "version",
    ),
    "list name": (
        {"ChefId": {"S": "k"}, "firstName": {"L": [{"S": "a"}]}, "lastName": {"S": "L"}},
        "firstName",
    ),
}


class TestForeignItems:
    """Items written to the table by another service, in shapes this API never writes."""

    @pytest.mark.parametrize("shape", FOREIGN)
    def test_list_keeps_answering_and_flags_the_item(self, api_client, shape):
        item, attribute = FOREIGN[shape]
        put_raw(GOOD)
        put_raw(item)
        response = api_client.get(URL)
        assert response.status_code == 200
        by_key = {c["chefId"]: c for c in response.json()}
        assert by_key["Good#One"] == {
            "chefId": "Good#One",
            "firstName": "One",
            "lastName": "Good",
            "version": None,
        }
        flagged = by_key["k"]
        assert list(flagged["errors"]) == [attribute]
        assert flagged["attributes"] == item
        # A field of the wrong type is null, never a cast of the stored value.
        if item.get(attribute, {}).keys() - {"S"}:
            assert flagged[attribute] is None

    @pytest.mark.parametrize("shape", FOREIGN)
    def test_read_of_the_item_is_a_json_422(self, api_client, shape):
        item, attribute = FOREIGN[shape]
        put_raw(item)
        response = api_client.get(detail("k"))
        assert response.status_code == 422
        assert response["Content-Type"].startswith("application/json")
        body = response.json()
        assert list(body["errors"]) == [attribute]
        assert body["item"]["attributes"] == item

    def test_extra_attributes_are_ignored(self, api_client):
        put_raw({**GOOD, "stars": {"N": "3"}, "tags": {"SS": ["a"]}})
        listed = api_client.get(URL).json()
        assert listed == [
            {"chefId": "Good#One", "firstName": "One", "lastName": "Good", "version": None}
        ]
        assert api_client.get(detail("Good#One")).json() == listed[0]

    def test_over_long_key_is_flagged(self, api_client):
        put_raw({**GOOD, "ChefId": {"S": "k" * 300}})
        (flagged,) = api_client.get(URL).json()
        assert list(flagged["errors"]) == ["ChefId"]

    def test_wrong_key_type_is_refused_by_dynamodb_itself(self):
        # The table's key schema types ChefId as S: no writer can store another key type.
        with pytest.raises(syncer_aws.dynamodb_client().exceptions.ClientError) as exc:
            put_raw({**GOOD, "ChefId": {"N": "1"}})
        assert exc.value.response["Error"]["Code"] == "ValidationException"

    def test_put_with_both_names_repairs_the_item(self, api_client):
        put_raw(FOREIGN["number name"][0])
        response = api_client.put(detail("k"), {"firstName": "F", "lastName": "L"}, format="json")
        assert response.status_code == 200
        assert api_client.get(detail("k")).status_code == 200
        assert raw_item("k")["firstName"] == {"S": "F"}

    def test_patch_that_leaves_it_malformed_is_a_json_422(self, api_client):
        put_raw({"ChefId": {"S": "k"}, "firstName": {"S": "F"}, "lastName": {"N": "7"}})
        response = api_client.patch(detail("k"), {"firstName": "G"}, format="json")
        assert response.status_code == 422
        assert "detail" in response.json()

    def test_stale_write_on_a_malformed_item_is_a_json_422(self, api_client):
        put_raw({**FOREIGN["number name"][0], "version": {"N": "3"}})
        response = api_client.put(
            detail("k"), {"firstName": "F", "lastName": "L", "version": 1}, format="json"
        )
        assert response.status_code == 422
        assert response.json()["errors"] == {"firstName": ["firstName: expected type S, got N"]}


class TestPostVersion:
    """POST keeps the optimistic-locking contract of PUT and PATCH."""

    def test_stale_version_is_409_with_current_item_and_no_write(self, api_client):
        api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")
        api_client.post(URL, {"firstName": "Alton", "lastName": "Brown"}, format="json")  # v2
        response = api_client.post(
            URL, {"firstName": "Alton", "lastName": "Brown", "version": 1}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["current"]["version"] == 2
        assert raw_item("Brown#Alton")["version"] == {"N": "2"}

    def test_current_version_updates(self, api_client):
        api_client.post(URL, {"chefId": "k", "firstName": "A"}, format="json")
        response = api_client.post(
            URL, {"chefId": "k", "firstName": "B", "version": 1}, format="json"
        )
        assert response.status_code == 200
        assert response.json()["version"] == 2
        assert raw_item("k")["firstName"] == {"S": "B"}

    def test_version_for_an_absent_key_is_404_and_creates_nothing(self, api_client):
        response = api_client.post(URL, {"chefId": "gone", "version": 3}, format="json")
        assert response.status_code == 404
        assert raw_item("gone") is None

    @pytest.mark.parametrize("version", ["x", -1, 1.5, [1]])
    def test_bad_version_is_400(self, api_client, version):
        api_client.post(URL, {"chefId": "k"}, format="json")
        response = api_client.post(URL, {"chefId": "k", "version": version}, format="json")
        assert response.status_code == 400 and "version" in response.json()
        assert raw_item("k")["version"] == {"N": "1"}
