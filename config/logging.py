"""Log formats. JSON lines (LOG_JSON=true): one object per line, for CloudWatch Logs Insights.

Sync log lines (loggers under `syncer`) always carry `key`, `sequence` and `event_id`
(null when a line is not about one change), so a change can be followed through the relay,
the worker and the outbox by one query. Any other `extra={...}` fields are kept too.
Text lines (the default) carry the same `extra={...}` fields, as `name=value` after the
message: a "change failed" line is useless without its key and error.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

SYNC_FIELDS = ("key", "sequence", "event_id")
SYNC_LOGGER_PREFIX = "syncer"

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record got from `extra={...}`."""
    return {
        name: value
        for name, value in vars(record).items()
        if name not in _STANDARD_ATTRS and not name.startswith("_")
    }


class TextFormatter(logging.Formatter):
    """The plain format, with the record's `extra` fields appended as `name=value` (values
    that are not plain words are quoted, so a line stays one line and parses back)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging API
        line = super().formatMessage(record)
        extras = [
            f"{name}={_text_value(value)}"
            for name, value in _extras(record).items()
            if value is not None
        ]
        return " ".join([line, *extras])


def _text_value(value: Any) -> str:
    text = str(value)
    if text and all(c.isalnum() or c in "-_.:/#@+" for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == SYNC_LOGGER_PREFIX or record.name.startswith(SYNC_LOGGER_PREFIX + "."):
            for name in SYNC_FIELDS:
                payload[name] = None
        payload.update(_extras(record))
        if record.exc_info:
            # exc_text: set (redacted) by RedactCredentialsFilter when it ran.
            payload["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        # default=str: sequence numbers may be Decimals, times datetimes.
        return json.dumps(payload, default=str)


# "Token <key>" / "Bearer <token>" (an Authorization header's value), however it got into
# a log line: the credential is replaced, the scheme kept.
_CREDENTIAL = re.compile(r"\b(Token|Bearer)(\s+|=)([A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE)


def redact(text: str) -> str:
    return _CREDENTIAL.sub(r"\1\2[redacted]", text)


class RedactCredentialsFilter(logging.Filter):
    """API tokens and the metrics token never reach a log line (defence in depth: nothing
    in backsync logs headers; a library or an exception message might)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, redact(value))
        if record.exc_info and not record.exc_text:
            # Formatters use exc_text when set: the traceback is redacted once, here.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
