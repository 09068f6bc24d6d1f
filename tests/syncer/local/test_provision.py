"""Local provisioning (`syncer.local.provision`, `manage.py dynamo_setup`) on moto."""

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from syncer import aws
from syncer.local import provision
from syncer.registry import registry

pytestmark = pytest.mark.usefixtures("aws")


def _table(name="chef"):
    return aws.dynamodb_client().describe_table(TableName=name)["Table"]


def _queue_attrs(name):
    sqs = aws.sqs_client()
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


class TestEnsure:
    def test_chef_mapping_is_registered(self):
        mapping = registry.for_table("chef")
        assert mapping.key_attribute == "ChefId"
        assert mapping.key_rule({"first_name": "Alton", "last_name": "Brown"}) == "Brown#Alton"

    def test_table_is_on_demand_with_new_and_old_images(self):
        table = _table()
        assert table["KeySchema"] == [{"AttributeName": "ChefId", "KeyType": "HASH"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["StreamSpecification"] == {
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        assert table["LatestStreamArn"]

    def test_sync_queue_is_fifo_with_redrive_to_its_dlq(self, settings):
        url, attrs = _queue_attrs(settings.SYNC_QUEUE_NAME)
        assert url == settings.SYNC_QUEUE_URL
        assert attrs["FifoQueue"] == "true"
        assert attrs["ContentBasedDeduplication"] == "false"
        assert attrs["VisibilityTimeout"] == str(settings.SQS_VISIBILITY_TIMEOUT)
        _, dlq = _queue_attrs(settings.SYNC_DLQ_NAME)
        assert dlq["FifoQueue"] == "true"
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == settings.SQS_MAX_RECEIVE_COUNT

    def test_outbox_queue_is_standard_with_redrive(self, settings):
        url, attrs = _queue_attrs(settings.OUTBOX_QUEUE_NAME)
        assert url == settings.OUTBOX_QUEUE_URL
        assert "FifoQueue" not in attrs
        _, dlq = _queue_attrs(settings.OUTBOX_DLQ_NAME)
        assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"] == dlq["QueueArn"]

    def test_reconcile_queue_is_standard_with_redrive(self, settings):
        url, attrs = _queue_attrs(settings.RECONCILE_QUEUE_NAME)
        assert url == settings.RECONCILE_QUEUE_URL
        assert "FifoQueue" not in attrs
        _, dlq = _queue_attrs(settings.RECONCILE_DLQ_NAME)
        assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"] == dlq["QueueArn"]

    def test_second_run_changes_nothing(self):
        before = _table()["LatestStreamArn"]
        report = provision.aws_resources_ensure()
        assert {r.action for r in report.resources} == {"unchanged"}
        assert len(report.resources) == 7  # 1 table + 6 queues
        assert _table()["LatestStreamArn"] == before

    def test_existing_table_without_stream_gets_one(self):
        client = aws.dynamodb_client()
        client.delete_table(TableName="chef")
        client.create_table(
            TableName="chef",
            KeySchema=[{"AttributeName": "ChefId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "ChefId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.put_item(TableName="chef", Item={"ChefId": {"S": "Brown#Alton"}})
        status = provision.aws_resources_ensure().get("table", "chef")
        assert status.action == "updated"
        assert _table()["StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        # Adopted, not recreated: the existing item is still there.
        assert client.get_item(TableName="chef", Key={"ChefId": {"S": "Brown#Alton"}})["Item"]

    def test_changed_visibility_timeout_is_put_back(self, settings):
        sqs = aws.sqs_client()
        url = sqs.get_queue_url(QueueName=settings.SYNC_QUEUE_NAME)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "7"})
        status = provision.aws_resources_ensure().get("queue", settings.SYNC_QUEUE_NAME)
        assert status.action.startswith("updated")
        assert _queue_attrs(settings.SYNC_QUEUE_NAME)[1]["VisibilityTimeout"] == str(
            settings.SQS_VISIBILITY_TIMEOUT
        )

    def test_table_with_another_key_is_refused(self):
        client = aws.dynamodb_client()
        client.delete_table(TableName="chef")
        client.create_table(
            TableName="chef",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        with pytest.raises(CommandError, match="hash key"):
            call_command("dynamo_setup", stdout=StringIO())

    def test_queue_url_mismatch_is_refused(self, settings):
        with (
            override_settings(SYNC_QUEUE_URL="http://elsewhere/1/backsync-changes.fifo"),
            pytest.raises(CommandError, match="SQS returns"),
        ):
            call_command("dynamo_setup", stdout=StringIO())

    def test_fifo_name_is_checked(self):
        with (
            override_settings(SYNC_QUEUE_NAME="not-fifo"),
            pytest.raises(CommandError, match=r"\.fifo"),
        ):
            call_command("dynamo_setup", stdout=StringIO())


class TestCommand:
    def test_twice_from_empty(self, moto_server, settings):
        moto_server.reset()
        first, second = StringIO(), StringIO()
        call_command("dynamo_setup", stdout=first)
        call_command("dynamo_setup", stdout=second)
        assert "table chef: created" in first.getvalue()
        assert f"queue {settings.SYNC_QUEUE_NAME}: created" in first.getvalue()
        assert "table chef: unchanged" in second.getvalue()
        assert second.getvalue().count(": unchanged") == 7  # 1 table + 3 queues and their DLQs
        assert "created" not in second.getvalue()

    def test_dry_run_changes_nothing(self, moto_server):
        moto_server.reset()
        out = StringIO()
        call_command("dynamo_setup", "--dry-run", stdout=out)
        assert "table chef: would create" in out.getvalue()
        assert aws.dynamodb_client().list_tables()["TableNames"] == []
        assert aws.sqs_client().list_queues().get("QueueUrls", []) == []

    def test_unreachable_endpoint_is_a_command_error(self, settings):
        settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{_closed_port()}"
        settings.DYNAMO_MAX_RETRIES = 0
        with pytest.raises(CommandError, match="unreachable"):
            call_command("dynamo_setup", stdout=StringIO())


def _closed_port() -> int:
    from tests.plugins.aws import free_port

    return free_port()
