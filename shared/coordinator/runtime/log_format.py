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
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from coordinator.runtime.settings import LOG_FORMATS as LOG_FORMATS  # re-exported: callers look here
from coordinator.runtime.settings import LOG_LEVELS as _LEVELS
from coordinator.runtime.settings import settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Unchanged from the processes' earlier basicConfig: tests and operators grep for it."""

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
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
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
    for an unknown level or format argument; a bad variable ends the process (runtime/settings.py).
    Safe to call again: the handler of an earlier call (or of ``logging.basicConfig``) is
    replaced, other handlers (files, test capture) stay.
    Returns the installed handler.
    """
    if level is None or fmt is None:
        env = settings()  # a bad QUBIT_LOG_LEVEL / QUBIT_LOG_FORMAT ends the process here, in one line
        level = env.log_level if level is None else level
        fmt = env.log_format if fmt is None else fmt
    raw_level = level.strip()
    level_name = raw_level.upper()
    if level_name not in _LEVELS:
        raise ValueError(f"unknown log level {raw_level!r}: expected one of {', '.join(_LEVELS)}")
    raw_format = fmt.strip()
    format_name = raw_format.lower()
    if format_name not in LOG_FORMATS:
        raise ValueError(f"unknown log format {raw_format!r}: expected one of {', '.join(LOG_FORMATS)}")

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


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value
