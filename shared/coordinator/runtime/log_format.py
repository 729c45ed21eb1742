"""How a process writes its logs: human text (the default) or one JSON object per line.

    configure_logging("planner")                      # QUBIT_LOG_LEVEL, QUBIT_LOG_FORMAT
    configure_logging("planner", level="DEBUG", fmt="json")

A JSON line::

    {"ts": "2025-01-15T08:00:00.123Z", "level": "WARNING", "logger": "services.planner",
     "service": "planner", "message": "cmd_1 timed out", "command_id": "cmd_1"}

``extra=`` fields of the call become keys of the object. docs/observability.md has the rest.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

LEVEL_ENV = "QUBIT_LOG_LEVEL"
FORMAT_ENV = "QUBIT_LOG_FORMAT"
LOG_FORMATS = ("text", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Unchanged from the processes' earlier basicConfig: tests and operators grep for it."""

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (ISO 8601, UTC), level, logger, service, message,
    exception (when the record carries one), and the record's ``extra=`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            # Our own keys win: a caller's extra={"service": ...} must not hide which process wrote the line.
            entry[f"extra_{key}" if key in entry else key] = _json_value(value)
        return json.dumps(entry, ensure_ascii=False, allow_nan=False)


def configure_logging(
    service: str,
    level: str | None = None,
    fmt: str | None = None,
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send the root logger's records to ``stream`` (default stderr) in ``fmt`` at ``level``.

    ``level`` defaults to $QUBIT_LOG_LEVEL or INFO, ``fmt`` to $QUBIT_LOG_FORMAT or
    ``text``; ``json`` writes one object per line (see JsonFormatter). Raises ValueError
    for an unknown level or format. Safe to call again: the handler of an earlier call (or
    of ``logging.basicConfig``) is replaced, other handlers (files, test capture) stay.
    Returns the installed handler.
    """
    raw_level = _choose(level, LEVEL_ENV, "INFO")
    level_name = raw_level.upper()
    if level_name not in _LEVELS:
        raise ValueError(
            f"unknown log level {_source(level, LEVEL_ENV, raw_level)}: expected one of {', '.join(_LEVELS)}"
        )
    raw_format = _choose(fmt, FORMAT_ENV, "text")
    format_name = raw_format.lower()
    if format_name not in LOG_FORMATS:
        raise ValueError(
            f"unknown log format {_source(fmt, FORMAT_ENV, raw_format)}: expected one of {', '.join(LOG_FORMATS)}"
        )

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service) if format_name == "json" else logging.Formatter(TEXT_FORMAT))
    handler._qubit_log_format = True  # type: ignore[attr-defined]  # marks it as ours for the next call
    root = logging.getLogger()
    for old in list(root.handlers):
        # exactly StreamHandler: what basicConfig installs; pytest's capture handlers subclass it
        if getattr(old, "_qubit_log_format", False) or type(old) is logging.StreamHandler:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level_name)
    return handler


def _choose(given: str | None, env_name: str, default: str) -> str:
    value = given if given is not None else os.environ.get(env_name)
    return (value or default).strip()


def _source(given: str | None, env_name: str, value: str) -> str:
    return repr(value) if given is not None else f"{env_name}={value!r}"


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value
