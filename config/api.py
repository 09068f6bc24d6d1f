"""API-wide error handling: every client error is a 400-family JSON answer, never a 500."""

from pynamodb.exceptions import AttributeDeserializationError
from rest_framework import status
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from syncer.aws import DynamoUnavailable


def _malformed_item(exc) -> Response | None:
    # An item another service wrote in a shape the API cannot read: a JSON 422, not a 500.
    from chefs.api.dynamo import malformed_response
    from chefs.dynamo_services import DynamoItemMalformed

    if isinstance(exc, DynamoItemMalformed):
        return malformed_response(exc.reading)
    if isinstance(exc, AttributeDeserializationError):
        return Response(
            {"detail": f"The stored item does not fit the schema: {exc}"},
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    return None


def exception_handler(exc, context):
    # The legacy API answered 400 to any unreadable body; keep that for a wrong media type.
    if isinstance(exc, ParseError | UnsupportedMediaType):
        message = str(exc.detail)
        return Response(
            {"detail": message, "errors": {"body": [message]}},
            status=status.HTTP_400_BAD_REQUEST,
        )
    # DynamoDB unreachable or throttling: the client may retry; never a 500.
    if isinstance(exc, DynamoUnavailable):
        return Response(
            {"detail": "The data store is unavailable; retry later."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(exc.retry_after)},
        )
    malformed = _malformed_item(exc)
    if malformed is not None:
        return malformed
    return drf_exception_handler(exc, context)
