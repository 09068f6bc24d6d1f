"""What the two stores hold, read directly (no application code), for end-to-end checks."""

from __future__ import annotations

import boto3
from django.conf import settings
from django.db import connection

from chefs.dynamo import ChefItem


def mysql_rows() -> dict[str | None, tuple[str, str]]:
    """chef_id -> (first, last) as a legacy reader sees cheftable."""
    with connection.cursor() as cur:
        cur.execute("SELECT chef_id, cheffirst, cheflast FROM cheftable")
        return {k: (f, last) for k, f, last in cur.fetchall()}


def dynamo_rows() -> dict[str, tuple[str, str]]:
    return {i.ChefId: (i.firstName, i.lastName) for i in ChefItem.scan(consistent_read=True)}


def stream_records(key: str | None = None) -> list[dict]:
    """Every record the chef table's stream holds (moto keeps them all), or those of `key`:
    one per DynamoDB write."""
    ddb = boto3.client("dynamodb", endpoint_url=settings.AWS_ENDPOINT_URL)
    streams = boto3.client("dynamodbstreams", endpoint_url=settings.AWS_ENDPOINT_URL)
    arn = ddb.describe_table(TableName="chef")["Table"]["LatestStreamArn"]
    out: list[dict] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            page = streams.get_records(ShardIterator=it, Limit=1000)
            out += page["Records"]
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
    if key is not None:
        out = [r for r in out if r["dynamodb"]["Keys"]["ChefId"]["S"] == key]
    return out
