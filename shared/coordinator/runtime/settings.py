"""Every process setting in one validated object, read from ``QUBIT_*`` environment variables.

    settings().mqtt_port              # the process's settings; a bad value ends the process
    Settings.from_environ({"QUBIT_MQTT_PORT": "abc"})   # raises SettingsError (tests, tools)

A bad value is one line per variable, naming it, never echoing a secret::

    QUBIT_MQTT_PORT='abc': must be an integer 1-65535

Blank values count as unset (the default applies), except ``QUBIT_METRICS_PORT``, where
blank means ``off`` as it always has. docs/settings.md is the table of every variable.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NoReturn

from pydantic import SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from coordinator.contract.topics import DEFAULT_ROOT, check_root

ENV_PREFIX = "QUBIT_"

DEFAULT_SITE_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "site.toml"
"""The repository's example site, for a checkout; deployments set QUBIT_SITE_CONFIG."""

DEFAULT_METRICS_PORT = 9464
"""The OpenTelemetry Prometheus exporter's default port: a port scrape configs already expect."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["text", "json"]

_SECRET_FIELDS = frozenset({"mqtt_password"})
_BLANK_IS_A_VALUE = frozenset({"metrics_port"})  # blank = off, documented before these settings existed


class SettingsError(ValueError):
    """Some settings are invalid: one line each, in ``lines``, variable and value first."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


class Settings(BaseSettings):
    """The settings every process reads from its environment (``QUBIT_`` + the field name)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", frozen=True)

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    """Accepted for compatibility; prefer ``mqtt_password_file`` (an environment is easier to leak)."""
    mqtt_password_file: Path | None = None
    """A file holding the broker password (trailing newline ignored); wins over ``mqtt_password``."""
    mqtt_ca_file: Path | None = None
    """Set: connect with TLS, verifying the broker's certificate against this CA."""
    site_config: Path = DEFAULT_SITE_CONFIG
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    metrics_port: int | None = DEFAULT_METRICS_PORT
    """None: no metrics endpoint; 0: any free port."""
    data_dir: Path = Path("data")
    """Where a process keeps what must survive it: the planner's ledger, each gateway's
    record of what it applied (docs/durability.md). A volume in the compose deployment."""
    ledger_retention_days: float = 7.0
    """How long the planner's ledger keeps finished commands and schedules."""
    max_message_bytes: int = 1 << 20
    """The largest bus message (schedules excepted): senders split batches under it,
    receivers refuse what is larger, the broker config is written from it."""
    page_host: str = "127.0.0.1"
    """The site page's address (services/site_page): loopback unless a proxy with a login is in front."""
    page_port: int = 8090
    """The site page's port; 0: any free port."""
    topic_root: str = DEFAULT_ROOT
    """The first level(s) of every topic of the site (``coordinator.contract.topics.ROOT``,
    which reads the same variable at import): several sites share one broker by their roots."""

    @field_validator("topic_root", mode="before")
    @classmethod
    def _topic_root(cls, value: Any) -> str:
        try:
            return check_root(value) if isinstance(value, str) else check_root("")
        except ValueError as exc:
            raise PydanticCustomError("qubit_setting", str(exc)) from None

    @field_validator("ledger_retention_days", mode="before")
    @classmethod
    def _retention(cls, value: Any) -> float:
        try:
            days = float(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None
        except ValueError:
            days = None
        if days is None or not 0 < days <= 3650:
            raise PydanticCustomError("qubit_setting", "must be a number of days, more than 0 and at most 3650")
        return days

    @field_validator("max_message_bytes", mode="before")
    @classmethod
    def _message_limit(cls, value: Any) -> int:
        try:
            size = int(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
        except ValueError:
            size = None
        if size is None or not 64 << 10 <= size <= 256 << 20:
            raise PydanticCustomError("qubit_setting", "must be an integer number of bytes, 65536 to 268435456")
        return size

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings of ``environ`` (default: this process's environment).

        Raises SettingsError naming every bad variable."""
        try:
            if environ is None:
                return cls()
            # model_validate reads only what it is given: the process environment stays out of it
            prefix = len(ENV_PREFIX)
            return cls.model_validate({
                name[prefix:].lower(): value for name, value in environ.items()
                if name.upper().startswith(ENV_PREFIX) and name[prefix:].lower() in cls.model_fields
            })
        except ValidationError as exc:
            raise SettingsError([_explain(error) for error in exc.errors()]) from None

    @model_validator(mode="before")
    @classmethod
    def _strip_and_drop_blanks(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        cleaned: dict[str, Any] = {}
        for name, value in data.items():
            if isinstance(value, str):
                value = value.strip()
                if not value and name not in _BLANK_IS_A_VALUE:
                    continue
            cleaned[name] = value
        return cleaned

    @field_validator("mqtt_port", mode="before")
    @classmethod
    def _broker_port(cls, value: Any) -> int:
        return _port(value, lowest=1, must_be="an integer 1-65535")

    @field_validator("page_port", mode="before")
    @classmethod
    def _page_port(cls, value: Any) -> int:
        return _port(value, lowest=0, must_be="a port number 0-65535 (0: any free port)")

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _metrics_port(cls, value: Any) -> int | None:
        if value is None or (isinstance(value, str) and value.lower() in ("", "off")):
            return None
        return _port(value, lowest=0, must_be="'off' or a port number 0-65535 (0: any free port)")

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return _one_of(value.upper() if isinstance(value, str) else value, LOG_LEVELS)

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return _one_of(value.lower() if isinstance(value, str) else value, LOG_FORMATS)

    @field_validator("mqtt_password_file", "mqtt_ca_file", mode="after")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        # Checked now, so a wrong path is a one-line error at start, not a failed connect later.
        # The message names the problem, never the content.
        if value is None:
            return None
        try:
            content = value.read_bytes()
        except OSError as exc:
            raise PydanticCustomError("qubit_setting", "cannot be read: {why}",
                                      {"why": exc.strerror or type(exc).__name__}) from None
        if not content.strip():
            raise PydanticCustomError("qubit_setting", "is an empty file")
        return value

    def mqtt_secret(self) -> str | None:
        """The broker password: the password file's content, else ``QUBIT_MQTT_PASSWORD``."""
        if self.mqtt_password_file is not None:
            return self.mqtt_password_file.read_text().strip()
        return self.mqtt_password.get_secret_value() if self.mqtt_password is not None else None


def settings() -> Settings:
    """This process's settings, read now (a test's monkeypatched environment counts).

    A bad value ends the process as a usage error does: one line per bad variable on
    stderr, no traceback, exit status 2."""
    try:
        return Settings.from_environ()
    except SettingsError as exc:
        exit_with(exc)


def exit_with(error: SettingsError) -> NoReturn:
    """Print ``error`` one line per variable on stderr and exit with status 2."""
    for line in error.lines:
        print(line, file=sys.stderr)
    raise SystemExit(2)


def environment_name(field: str) -> str:
    """The variable that sets ``field``: ``mqtt_port`` -> ``QUBIT_MQTT_PORT``."""
    return ENV_PREFIX + field.upper()


def _port(value: Any, *, lowest: int, must_be: str) -> int:
    try:
        port = int(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    except ValueError:
        port = None
    if port is None or not lowest <= port <= 65535:
        raise PydanticCustomError("qubit_setting", "must be " + must_be)
    return port


def _one_of(value: Any, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise PydanticCustomError("qubit_setting", "must be one of " + ", ".join(choices))
    return value


def _explain(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ("",)
    field = str(loc[0])
    shown = "(hidden)" if field in _SECRET_FIELDS else repr(error.get("input"))
    return f"{environment_name(field)}={shown}: {error.get('msg', 'invalid')}"

