"""The change contract's rules, shared by the stream handler and the apply."""

from __future__ import annotations

import pytest

from syncer.pipeline.stream.contract import (
    RecordError,
    broker_url,
    change_from_record,
    sequence_valid,
    table_from_stream_arn,
)
from tests.syncer import events as ev


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1", True),
        ("9" * 40, True),
        ("9" * 41, False),
        ("", False),
        ("12a", False),
        ("-1", False),
        ("1²", False),  # str.isdigit() alone accepts it
        (12, False),
        (None, False),
    ],
)
def test_sequence_valid(value, valid):
    assert sequence_valid(value) is valid


def test_a_record_whose_sequence_number_the_apply_would_refuse_is_refused_here():
    record = ev.insert("Brown#Alton")
    record["dynamodb"]["SequenceNumber"] = "1²"
    with pytest.raises(RecordError):
        change_from_record(record)


def test_table_from_stream_arn():
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/chef/stream/2026-01-01T00:00:00.000"
    assert table_from_stream_arn(arn) == "chef"
    for bad in (None, "chef", "arn:aws:dynamodb:us-east-1:1:index/chef"):
        with pytest.raises(RecordError):
            table_from_stream_arn(bad)


def test_broker_url():
    assert broker_url(endpoint_url=None, access_key_id="k", secret_access_key="s") == "sqs://"
    local = broker_url(
        endpoint_url="http://127.0.0.1:5000/", access_key_id=None, secret_access_key="a/b+c"
    )
    assert local == "sqs://testing:a%2Fb%2Bc@127.0.0.1:5000"
