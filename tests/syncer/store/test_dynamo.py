"""syncer.store.dynamo against moto: conditional writes on the version, batch put, reads."""

from __future__ import annotations

import pytest

from chefs.mapping import CHEF_MAPPING
from syncer.aws import dynamodb_client
from syncer.store import dynamo

M = CHEF_MAPPING


def values(first: str, last: str) -> dict:
    return {"firstName": first, "lastName": last}


def stored(key: str) -> dict | None:
    return dynamo.item_fetch(mapping=M, key=key)


def test_create_only_while_the_key_is_absent(aws):
    write = dynamo.item_create(mapping=M, key="Brown#Alton", values=values("Alton", "Brown"))
    assert write.ok and write.version == 1
    assert stored("Brown#Alton") == {
        "ChefId": {"S": "Brown#Alton"},
        "firstName": {"S": "Alton"},
        "lastName": {"S": "Brown"},
        "version": {"N": "1"},
    }
    again = dynamo.item_create(mapping=M, key="Brown#Alton", values=values("Other", "Brown"))
    assert not again.ok and again.error == "condition failed"
    assert dynamo.image_values(mapping=M, image=stored("Brown#Alton")) == values("Alton", "Brown")
    # An item without a version (not ours) is not overwritten either: the key is taken.
    dynamodb_client().put_item(TableName="chef", Item={"ChefId": {"S": "u"}})
    assert not dynamo.item_create(mapping=M, key="u", values=values("A", "B")).ok
    assert stored("u") == {"ChefId": {"S": "u"}}


def test_create_leaves_out_absent_values(aws):
    assert dynamo.item_create(mapping=M, key="k", values={"firstName": "A", "lastName": None}).ok
    assert "lastName" not in stored("k")


def test_update_only_at_the_version_it_was_based_on(aws):
    dynamo.item_create(mapping=M, key="k", values=values("A", "B"))
    stale = dynamo.item_update(mapping=M, key="k", values=values("X", "B"), base=2)
    assert not stale.ok
    assert stored("k")["firstName"] == {"S": "A"} and stored("k")["version"] == {"N": "1"}

    write = dynamo.item_update(
        mapping=M, key="k", values={"firstName": "C", "lastName": None}, base=1
    )
    assert write.ok and write.version == 2
    item = stored("k")
    assert item["firstName"] == {"S": "C"} and "lastName" not in item  # None removes it
    assert item["version"] == {"N": "2"}
    # The same base again: someone (we) wrote since.
    assert not dynamo.item_update(mapping=M, key="k", values=values("D", "B"), base=1).ok
    assert stored("k")["firstName"] == {"S": "C"}


def test_update_never_creates_and_without_a_base_needs_an_unversioned_item(aws):
    assert not dynamo.item_update(mapping=M, key="gone", values=values("A", "B"), base=None).ok
    assert stored("gone") is None
    dynamo.item_create(mapping=M, key="k", values=values("A", "B"))  # version 1
    assert not dynamo.item_update(mapping=M, key="k", values=values("X", "B"), base=None).ok
    dynamodb_client().put_item(
        TableName="chef", Item={"ChefId": {"S": "u"}, "firstName": {"S": "A"}}
    )
    write = dynamo.item_update(mapping=M, key="u", values=values("A", "B"), base=None)
    assert write.ok and write.version == 1


def test_delete_only_at_the_version_it_was_based_on(aws):
    dynamo.item_create(mapping=M, key="k", values=values("A", "B"))
    dynamo.item_update(mapping=M, key="k", values=values("C", "B"), base=1)  # version 2
    assert not dynamo.item_delete(mapping=M, key="k", base=1).ok
    assert stored("k") is not None
    assert dynamo.item_delete(mapping=M, key="k", base=2).ok
    assert stored("k") is None
    assert not dynamo.item_delete(mapping=M, key="k", base=2).ok  # already gone: refused


def test_other_errors_raise(aws):
    from pynamodb.exceptions import PutError

    dynamodb_client().delete_table(TableName="chef")
    with pytest.raises(PutError):
        dynamo.item_create(mapping=M, key="k", values=values("A", "B"))


def test_batch_put_writes_more_than_a_request_holds_and_reads_them_back(aws):
    keys = [f"L{i}#F{i}" for i in range(130)]  # 6 BatchWriteItems, 2 BatchGetItems
    items = [
        dynamo.image_build(mapping=M, key=k, row={"first_name": k[-2:], "last_name": k})
        for k in keys
    ]
    dynamo.items_put(mapping=M, items=items)
    found = dynamo.items_fetch(mapping=M, keys=[*keys, "absent"])
    assert sorted(found) == sorted(keys)
    assert found["L7#F7"] == {
        "ChefId": {"S": "L7#F7"},
        "firstName": {"S": "F7"},
        "lastName": {"S": "L7#F7"},
        "version": {"N": "1"},
    }
    # The batch's items are the ones item_create writes: later conditional writes apply.
    assert dynamo.item_update(mapping=M, key="L7#F7", values=values("G", "H"), base=1).ok


def test_image_build_is_what_item_create_writes(aws):
    dynamo.item_create(mapping=M, key="a", values=values("A", "B"))
    built = dynamo.image_build(mapping=M, key="a", row={"first_name": "A", "last_name": "B"})
    assert built == stored("a")


class _Throttling:
    """A client whose first answer leaves items unprocessed, as DynamoDB does when it
    throttles a BatchWriteItem."""

    def __init__(self) -> None:
        self.requests: list[list] = []

    def batch_write_item(self, *, RequestItems):  # noqa: N803 - boto3's parameter name
        sent = RequestItems["chef"]
        self.requests.append(sent)
        if len(self.requests) == 1:
            return {"UnprocessedItems": {"chef": sent[20:]}}
        return {"UnprocessedItems": {}}


def test_batch_put_resends_unprocessed_items_after_a_pause(monkeypatch):
    client, sleeps = _Throttling(), []
    monkeypatch.setattr(dynamo, "dynamodb_client", lambda: client)
    monkeypatch.setattr(dynamo.time, "sleep", sleeps.append)
    items = [{"ChefId": {"S": str(i)}} for i in range(30)]
    dynamo.items_put(mapping=M, items=items)
    sent = [
        r["ChefId"]["S"]
        for request in client.requests
        for r in (x["PutRequest"]["Item"] for x in request)
    ]
    assert sorted(sent, key=int) == sorted(
        [str(i) for i in range(30)] + [str(i) for i in range(20, 25)], key=int
    )
    assert all(len(r) <= 25 for r in client.requests)
    assert sleeps == [0.05]  # once, after the throttled answer; not after the good ones


def test_reads_are_none_or_empty_for_absent_keys(aws):
    assert dynamo.item_fetch(mapping=M, key="nobody") is None
    assert dynamo.image_fetch(mapping=M, keys={"ChefId": {"S": "nobody"}}) is None
    assert dynamo.items_fetch(mapping=M, keys=[]) == {}
    assert dynamo.image_values(mapping=M, image=None) is None


def test_image_values_shows_a_refused_item_raw(aws):
    image = {"ChefId": {"S": "k"}, "firstName": {"N": "1"}}
    assert dynamo.image_values(mapping=M, image=image) == {"firstName": {"N": "1"}}
