"""Text log lines (the default, LOG_JSON unset) carry what the JSON lines carry: the key,
the sequence or version, and the error."""

import logging
from logging.config import DictConfigurator

import pytest
from django.conf import settings

from chefs.mapping import CHEF_MAPPING
from syncer.aws import dynamodb_client
from syncer.pipeline.apply import changes_apply
from syncer.reconcile.report import ReconcileOptions
from syncer.reconcile.run import reconcile_run
from tests.syncer import conftest as syncer_conftest
from tests.syncer.conftest import gadget_change


@pytest.fixture(autouse=True)
def _no_settle(settings):
    # Nothing writes while these run: no need to wait for changes in flight (issue 19).
    settings.RECONCILE_SETTLE_SECONDS = 0


gadget_mapping = syncer_conftest.gadget_mapping  # the fixture, shared


def text_lines(caplog, message: str) -> list[str]:
    """The matching records, formatted by the text formatter the settings configure."""
    config = settings.LOGGING["formatters"]["plain"]
    formatter = DictConfigurator(settings.LOGGING).configure_formatter(dict(config))
    return [formatter.format(r) for r in caplog.records if r.getMessage() == message]


@pytest.mark.django_db
@pytest.mark.usefixtures("gadget_mapping")
def test_change_failed_text_line_has_key_sequence_and_error(caplog):
    caplog.set_level(logging.WARNING, logger="syncer")
    changes_apply(
        changes=[gadget_change("k 1", "INSERT", 42, image={"Sku": {"S": "k 1"}}, event_id="e1")]
    )
    (line,) = text_lines(caplog, "change failed")
    assert 'key="k 1"' in line and "sequence=42" in line and "event_id=e1" in line
    assert "error=" in line and "missing attribute" in line
    assert "\n" not in line


def test_text_values_are_quoted_so_a_line_stays_one_line():
    record = logging.LogRecord("syncer.x", logging.WARNING, "f", 1, "m", None, None)
    record.key, record.error, record.version = "Flay#Bobby", "bad\nthing", None
    formatter = DictConfigurator(settings.LOGGING).configure_formatter(
        dict(settings.LOGGING["formatters"]["plain"])
    )
    line = formatter.format(record)
    assert line.endswith(' m key=Flay#Bobby error="bad\\nthing"')  # None fields are left out


@pytest.mark.django_db
@pytest.mark.usefixtures("aws")
def test_reconcile_repair_failed_text_line_has_key_version_and_error(caplog):
    caplog.set_level(logging.WARNING, logger="syncer")
    dynamodb_client().put_item(
        TableName=CHEF_MAPPING.table_name,
        Item={
            "ChefId": {"S": "Bad#Type"},
            "firstName": {"N": "7"},
            "lastName": {"S": "L"},
            "version": {"N": "3"},
        },
    )
    reconcile_run(
        mappings=[CHEF_MAPPING],
        options=ReconcileOptions(segments=1, buckets=1, repair="to-mysql"),
    )
    (line,) = text_lines(caplog, "reconcile repair failed")
    assert "key=Bad#Type" in line and "version=3" in line
    assert "error=" in line and "firstName" in line
