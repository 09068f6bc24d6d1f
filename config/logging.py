"""Log formats. JSON lines (LOG_JSON=true, python-json-logger): one object per line, for
CloudWatch Logs Insights.

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

from pythonjsonlogger.json import JsonFormatter as _JsonLinesFormatter

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


class JsonFormatter(_JsonLinesFormatter):
    """python-json-logger's JSON lines with this project's fields: `time` (UTC, ms),
    `level`, `logger`, `message`, the sync fields on sync lines, every `extra` field, and
    `exc_info` / `stack_info` when present."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            reserved_attrs=sorted(_STANDARD_ATTRS),  # the rest is `extra`, as in text lines
            json_default=str,  # sequence numbers may be Decimals, times datetimes
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, tz=UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)
        if record.name == SYNC_LOGGER_PREFIX or record.name.startswith(SYNC_LOGGER_PREFIX + "."):
            for name in SYNC_FIELDS:
                log_data.setdefault(name, None)
        if record.exc_info and record.exc_text:
            # Set (redacted) by RedactCredentialsFilter when it ran; the library would
            # format the traceback again from exc_info.
            log_data["exc_info"] = record.exc_text


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
