"""The process settings (runtime/settings.py): defaults, parsing, and one line per bad variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.runtime.mqtt import BrokerSettings
from coordinator.runtime.settings import DEFAULT_SITE_CONFIG, Settings, SettingsError, _explain, settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_qubit_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("QUBIT_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = Settings.from_environ({})
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_username, s.mqtt_password) == ("127.0.0.1", 1883, None, None)
    assert s.site_config == DEFAULT_SITE_CONFIG
    assert (s.log_level, s.log_format, s.metrics_port) == ("INFO", "text", 9464)
    assert (s.mqtt_password_file, s.mqtt_ca_file, s.mqtt_secret()) == (None, None, None)


def test_every_variable_is_read():
    s = Settings.from_environ({
        "QUBIT_MQTT_HOST": "broker.site", "QUBIT_MQTT_PORT": " 8883 ", "QUBIT_MQTT_USERNAME": "planner",
        "QUBIT_MQTT_PASSWORD": "s3cret-s3cret-s3cret", "QUBIT_SITE_CONFIG": "/etc/qubit/site.toml",
        "QUBIT_LOG_LEVEL": "warning", "QUBIT_LOG_FORMAT": "JSON", "QUBIT_METRICS_PORT": "0",
        "OTHER": "ignored", "QUBIT_UNKNOWN": "ignored",
    })
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_username) == ("broker.site", 8883, "planner")
    assert s.mqtt_password is not None and s.mqtt_password.get_secret_value() == "s3cret-s3cret-s3cret"
    assert s.site_config == Path("/etc/qubit/site.toml")
    assert (s.log_level, s.log_format, s.metrics_port) == ("WARNING", "json", 0)


def test_the_process_environment_is_the_default(monkeypatch):
    monkeypatch.setenv("QUBIT_MQTT_PORT", "1884")
    monkeypatch.setenv("QUBIT_METRICS_PORT", "off")
    assert Settings.from_environ().mqtt_port == settings().mqtt_port == 1884
    assert settings().metrics_port is None


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_is_unset_except_for_the_metrics_port_where_it_is_off(blank):
    s = Settings.from_environ({"QUBIT_MQTT_HOST": blank, "QUBIT_MQTT_PORT": blank, "QUBIT_MQTT_USERNAME": blank,
                               "QUBIT_MQTT_PASSWORD": blank, "QUBIT_LOG_LEVEL": blank, "QUBIT_METRICS_PORT": blank})
    assert (s.mqtt_host, s.mqtt_port, s.mqtt_username, s.mqtt_password) == ("127.0.0.1", 1883, None, None)
    assert (s.log_level, s.metrics_port) == ("INFO", None)


@pytest.mark.parametrize(("name", "value", "line"), [
    ("QUBIT_MQTT_PORT", "abc", "QUBIT_MQTT_PORT='abc': must be an integer 1-65535"),
    ("QUBIT_MQTT_PORT", "0", "QUBIT_MQTT_PORT='0': must be an integer 1-65535"),
    ("QUBIT_MQTT_PORT", "65536", "QUBIT_MQTT_PORT='65536': must be an integer 1-65535"),
    ("QUBIT_MQTT_PORT", "1883.0", "QUBIT_MQTT_PORT='1883.0': must be an integer 1-65535"),
    ("QUBIT_METRICS_PORT", "on", "QUBIT_METRICS_PORT='on': must be 'off' or a port number 0-65535 (0: any free port)"),
    ("QUBIT_LOG_LEVEL", "loud", "QUBIT_LOG_LEVEL='loud': must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("QUBIT_LOG_FORMAT", "yaml", "QUBIT_LOG_FORMAT='yaml': must be one of text, json"),
])
def test_a_bad_value_is_one_line_naming_the_variable(name, value, line):
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({name: value})
    assert refused.value.lines == [line]


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({"QUBIT_MQTT_PORT": "abc", "QUBIT_LOG_FORMAT": "yaml"})
    assert [line.split("=")[0] for line in refused.value.lines] == ["QUBIT_MQTT_PORT", "QUBIT_LOG_FORMAT"]


def test_the_password_is_never_shown():
    s = Settings.from_environ({"QUBIT_MQTT_USERNAME": "planner", "QUBIT_MQTT_PASSWORD": "s3cret-s3cret-s3cret"})
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    broker = BrokerSettings(username="planner", password="s3cret-s3cret-s3cret")
    assert "s3cret" not in repr(broker)


def test_a_bad_secret_is_named_but_never_shown():
    # No rule refuses a password today; the day one does, its error must not echo it.
    line = _explain({"loc": ("mqtt_password",), "input": "s3cret-s3cret-s3cret", "msg": "must be 16 bytes or more"})
    assert line == "QUBIT_MQTT_PASSWORD=(hidden): must be 16 bytes or more"


def test_settings_are_frozen():
    s = Settings.from_environ({})
    with pytest.raises(ValueError, match="frozen"):
        s.mqtt_port = 1884  # type: ignore[misc]


def test_broker_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("QUBIT_MQTT_HOST", "broker.site")
    monkeypatch.setenv("QUBIT_MQTT_PORT", "8883")
    monkeypatch.setenv("QUBIT_MQTT_USERNAME", "planner")
    monkeypatch.setenv("QUBIT_MQTT_PASSWORD", "s3cret-s3cret-s3cret")
    assert BrokerSettings.from_env() == BrokerSettings("broker.site", 8883, "planner", "s3cret-s3cret-s3cret")


def test_the_password_file_wins_and_its_newline_is_not_part_of_the_password(tmp_path):
    secret = tmp_path / "planner.password"
    secret.write_text("from-the-file-0123456789\n")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = Settings.from_environ({"QUBIT_MQTT_USERNAME": "planner", "QUBIT_MQTT_PASSWORD": "from-the-environment",
                               "QUBIT_MQTT_PASSWORD_FILE": str(secret), "QUBIT_MQTT_CA_FILE": str(ca)})
    assert s.mqtt_secret() == "from-the-file-0123456789"
    assert s.mqtt_ca_file == ca
    assert "from-the-file" not in repr(s)


def test_broker_settings_read_the_password_file_and_the_ca(monkeypatch, tmp_path):
    secret = tmp_path / "planner.password"
    secret.write_text("from-the-file-0123456789\n")
    monkeypatch.setenv("QUBIT_MQTT_USERNAME", "planner")
    monkeypatch.setenv("QUBIT_MQTT_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("QUBIT_MQTT_CA_FILE", str(secret))  # readable is all the settings check
    broker = BrokerSettings.from_env()
    assert (broker.username, broker.password, broker.ca_file) == ("planner", "from-the-file-0123456789", secret)
    assert "from-the-file" not in repr(broker) and "from-the-file" not in repr(broker.login)


@pytest.mark.parametrize("variable", ["QUBIT_MQTT_PASSWORD_FILE", "QUBIT_MQTT_CA_FILE"])
def test_a_missing_or_empty_secret_file_is_one_line_naming_the_path_never_the_content(variable, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({variable: str(missing)})
    assert refused.value.lines == [f"{variable}='{missing}': cannot be read: No such file or directory"]
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({variable: str(empty)})
    assert refused.value.lines == [f"{variable}='{empty}': is an empty file"]
    unreadable = tmp_path  # a directory: open() fails, and the message says why, not what is inside
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({variable: str(unreadable)})
    assert refused.value.lines == [f"{variable}='{unreadable}': cannot be read: Is a directory"]


def test_a_bad_value_in_the_process_environment_ends_it_with_status_2(monkeypatch, capsys):
    monkeypatch.setenv("QUBIT_MQTT_PORT", "abc")
    with pytest.raises(SystemExit) as stopped:
        settings()
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "QUBIT_MQTT_PORT='abc': must be an integer 1-65535\n"


@pytest.mark.parametrize("command", [
    ["-m", "services.tracker"],
    ["-m", "tools.cli", "states"],
])
def test_a_real_process_with_a_bad_port_says_so_in_one_line_and_exits_2(command):
    env = {name: value for name, value in os.environ.items() if not name.startswith("QUBIT_")}
    env |= {"QUBIT_MQTT_PORT": "abc", "QUBIT_MQTT_PASSWORD": "s3cret-s3cret-s3cret", "QUBIT_METRICS_PORT": "off"}
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "QUBIT_MQTT_PORT='abc': must be an integer 1-65535\n"
    assert done.stdout == ""
