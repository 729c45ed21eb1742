import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.runtime.log_format import JsonFormatter, configure_logging

log = logging.getLogger("services.test_component")


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch):
    monkeypatch.delenv("QUBIT_LOG_LEVEL", raising=False)
    monkeypatch.delenv("QUBIT_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def json_lines(stream):
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_text_format_is_the_one_the_processes_always_wrote():
    out = io.StringIO()
    configure_logging("planner", stream=out)  # defaults: text, INFO
    log.info("dispatched %s", "cmd_1")
    log.debug("not at INFO")
    line, = out.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO services\.test_component: dispatched cmd_1", line)


def test_json_lines_carry_the_fields_and_extras():
    out = io.StringIO()
    configure_logging("planner", level="DEBUG", fmt="json", stream=out)
    before = datetime.now(UTC)
    log.debug("debug too")
    log.warning(
        "%s timed out", "cmd_1",
        extra={"command_id": "cmd_1", "attempts": 2, "params": {"power_kw": 7.0}, "tags": ("a", "b"),
               "at": datetime(2025, 1, 15, tzinfo=UTC), "ratio": float("nan"), "service": "spoofed"},
    )
    first, entry = json_lines(out)
    assert first["level"] == "DEBUG" and first["message"] == "debug too"
    assert set(first) == {"ts", "level", "logger", "service", "message"}

    assert entry["level"] == "WARNING"
    assert entry["logger"] == "services.test_component"
    assert entry["service"] == "planner" and entry["extra_service"] == "spoofed"
    assert entry["message"] == "cmd_1 timed out"
    assert entry["ts"].endswith("Z")
    ts = datetime.fromisoformat(entry["ts"])
    assert ts.utcoffset() == timedelta(0) and abs(ts - before) < timedelta(seconds=5)
    assert entry["command_id"] == "cmd_1" and entry["attempts"] == 2
    assert entry["params"] == {"power_kw": 7.0} and entry["tags"] == ["a", "b"]
    assert entry["at"] == repr(datetime(2025, 1, 15, tzinfo=UTC))  # not JSON: its repr
    assert entry["ratio"] == "nan"  # NaN is not JSON either
    assert "exception" not in entry


def test_json_exception_is_rendered_into_the_line():
    out = io.StringIO()
    configure_logging("tracker", fmt="json", stream=out)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.exception("handler failed")
    entry, = json_lines(out)
    assert entry["message"] == "handler failed" and entry["level"] == "ERROR"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].rstrip().endswith("ZeroDivisionError: division by zero")
    assert len(out.getvalue().splitlines()) == 1  # the traceback stays inside the one line


def test_environment_chooses_level_and_format(monkeypatch):
    monkeypatch.setenv("QUBIT_LOG_LEVEL", "warning")
    monkeypatch.setenv("QUBIT_LOG_FORMAT", " JSON ")
    out = io.StringIO()
    configure_logging("gateway", stream=out)
    log.info("quiet")
    log.warning("loud")
    assert [e["message"] for e in json_lines(out)] == ["loud"]
    assert logging.getLogger().level == logging.WARNING

    out = io.StringIO()
    configure_logging("gateway", level="INFO", fmt="text", stream=out)  # arguments beat the environment
    log.info("shown")
    assert out.getvalue().endswith("INFO services.test_component: shown\n")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"level": "LOUD"}, "unknown log level 'LOUD': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"fmt": "yaml"}, "unknown log format 'yaml': expected one of text, json"),
])
def test_unknown_level_or_format_is_refused_and_nothing_changes(kwargs, message):
    root = logging.getLogger()
    handlers = list(root.handlers)
    with pytest.raises(ValueError, match=re.escape(message)):
        configure_logging("planner", **kwargs)
    assert root.handlers == handlers


@pytest.mark.parametrize(("env", "message"), [
    ({"QUBIT_LOG_LEVEL": "verbose"}, "QUBIT_LOG_LEVEL='verbose': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"QUBIT_LOG_FORMAT": "logfmt"}, "QUBIT_LOG_FORMAT='logfmt': must be one of text, json"),
])
def test_unknown_level_or_format_in_the_environment_ends_the_process_in_one_line(env, message, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    handlers = list(root.handlers)
    with pytest.raises(SystemExit) as stopped:
        configure_logging("planner")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == message + "\n"
    assert root.handlers == handlers


def test_calling_again_replaces_the_handler_and_keeps_others(caplog):
    earlier, first, second = io.StringIO(), io.StringIO(), io.StringIO()
    root = logging.getLogger()
    # what logging.basicConfig() installs (it would be a no-op here: pytest's handlers are on root)
    basic = logging.StreamHandler(earlier)
    root.addHandler(basic)
    h1 = configure_logging("planner", stream=first)
    assert basic not in root.handlers
    h2 = configure_logging("planner", fmt="json", stream=second)
    assert h1 not in root.handlers and h2 in root.handlers
    log.info("once")
    assert earlier.getvalue() == first.getvalue() == ""
    assert [e["message"] for e in json_lines(second)] == ["once"]
    assert "once" in caplog.text  # pytest's capture handler was left alone


def test_formatter_without_configure_logging():
    record = logging.LogRecord("x.y", logging.ERROR, __file__, 1, "boom %d", (3,), None)
    entry = json.loads(JsonFormatter("ingester").format(record))
    assert (entry["service"], entry["logger"], entry["level"], entry["message"]) == (
        "ingester", "x.y", "ERROR", "boom 3")
