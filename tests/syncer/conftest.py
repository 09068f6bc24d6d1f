import itertools

import pytest

from syncer.registry import registry
from tests.testapp.mapping import GADGET_MAPPING

_ids = itertools.count(1)


@pytest.fixture
def gadget_mapping():
    registry.register(GADGET_MAPPING)
    yield GADGET_MAPPING
    registry.unregister(GADGET_MAPPING.name)


def gadget_change(
    sku: str,
    event: str,
    seq: int,
    *,
    name: str = "g",
    count: int | None = 1,
    active: bool = True,
    ts: float | None = 1_700_000_000.0,
    image: dict | None = None,
    event_id: str | None = None,
) -> dict:
    """A change message for the gadget mapping, as the stream handler would send it."""
    if image is None and event != "REMOVE":
        image = {"Sku": {"S": sku}, "name": {"S": name}, "active": {"BOOL": active}}
        if count is not None:
            image["count"] = {"N": str(count)}
    return {
        "id": event_id or f"ev-{next(_ids)}",
        "table": "gadgets",
        "event": event,
        "seq": str(seq),
        "keys": {"Sku": {"S": sku}},
        "image": image,
        "ts": ts,
    }
