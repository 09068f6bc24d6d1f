"""JSON log lines (LOG_JSON=true): one object per line, for CloudWatch Logs Insights.

Sync log lines (loggers under `syncer`) always carry `key`, `sequence` and `event_id`
(null when a line is not about one change), so a change can be followed through the relay,
the worker and the outbox by one query. Any other `extra={...}` fields are kept too.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

SYNC_FIELDS = ("key", "sequence", "event_id")
SYNC_LOGGER_PREFIX = "syncer"

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


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
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and not name.startswith("_"):
                payload[name] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack_info"] = self.formatStack(record.stack_info)
        # default=str: sequence numbers may be Decimals, times datetimes.
        return json.dumps(payload, default=str)
