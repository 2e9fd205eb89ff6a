"""One logging configuration for the service and the CLI: JSON lines on stderr.

:func:`logging_config` returns a ``dictConfig`` dictionary; ``calogan serve`` hands the same dictionary
to uvicorn as ``log_config`` so uvicorn's own messages come out in the same format. Fields passed with
``extra={...}`` (``batch_size``, ``duration_s``, ``request_id``...) become keys of the JSON object.
Imports nothing from ``app``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``. uvicorn adds
# ``color_message`` (the same text with terminal colours), which has no place in JSON.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message",
}


class JsonLinesFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, then the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary for calogan and uvicorn at ``level``."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLinesFormatter}},
        "handlers": {"stderr": handler},
        "loggers": {
            "app": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    """Install :func:`logging_config` for this process (the CLI calls it once)."""
    logging.config.dictConfig(logging_config(level))
