"""syncer.aws: error classification and the local-settings endpoint check."""

import pytest

from syncer import aws


class TestErrorClassification:
    """Throttling cannot be provoked on moto; the classifier is checked on botocore errors."""

    @pytest.mark.parametrize(
        "code,unavailable",
        [
            ("ProvisionedThroughputExceededException", True),
            ("ThrottlingException", True),
            ("RequestLimitExceeded", True),
            ("InternalServerError", True),
            ("ConditionalCheckFailedException", False),
            ("ValidationException", False),
        ],
    )
    def test_client_error_codes(self, code, unavailable):
        from botocore.exceptions import ClientError
        from pynamodb.exceptions import UpdateError

        error = ClientError({"Error": {"Code": code, "Message": "x"}}, "UpdateItem")
        assert aws.dynamo_error_is_unavailable(error) is unavailable
        assert aws.dynamo_error_is_unavailable(UpdateError("x", error)) is unavailable

    def test_throttling_becomes_dynamo_unavailable(self):
        from botocore.exceptions import ClientError
        from pynamodb.exceptions import PutError

        error = ClientError({"Error": {"Code": "ThrottlingException"}}, "PutItem")
        with pytest.raises(aws.DynamoUnavailable), aws.dynamo_errors():
            raise PutError("throttled", error)

    def test_other_errors_pass_through(self):
        from botocore.exceptions import ClientError
        from pynamodb.exceptions import PutError

        error = ClientError({"Error": {"Code": "ValidationException"}}, "PutItem")
        with pytest.raises(PutError), aws.dynamo_errors():
            raise PutError("bad", error)


# --- local settings without a stack: a system check says so (issue 16) ----------------------


def _w001() -> list:
    from django.core import checks

    return [m for m in checks.run_checks() if m.id == "syncer.W001"]


def test_local_settings_without_an_endpoint_warn_that_this_is_real_aws(settings):
    settings.LOCAL_STACK_ENV_FILE = "/repo/.run/env"
    settings.AWS_ENDPOINT_URL = None
    (warning,) = _w001()
    assert "real AWS" in warning.msg and "amazonaws.com" in warning.msg
    assert "make up" in warning.hint and "/repo/.run/env" in warning.hint


def test_no_warning_with_an_endpoint_or_outside_local_settings(settings):
    settings.LOCAL_STACK_ENV_FILE = "/repo/.run/env"
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:5000"
    assert _w001() == []
    del settings.LOCAL_STACK_ENV_FILE
    settings.AWS_ENDPOINT_URL = None  # production: real AWS is the point
    assert _w001() == []
