"""The exit codes of `qubit` and the one-line error a user's mistake ends it with.

Every mistake a user can make (a missing or malformed file, a bad setting, a filter that
names nothing) is raised as ``CliError`` and printed by ``main`` as one line on stderr,
``qubit: <what>: <what is wrong>``, never a traceback. docs/cli.md is the table.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What the exit status of `qubit` means (docs/cli.md)."""

    OK = 0
    FAILED = 1
    """The thing asked for was refused or failed: a schedule rejected, a command failed, an id unknown."""
    USAGE = 2
    """The command line, a file it names, a setting or the site config is wrong (as argparse's own 2)."""
    UNREACHABLE = 3
    """The MQTT broker cannot be reached."""
    CREDENTIALS = 4
    """The broker refused the credentials (QUBIT_MQTT_USERNAME / QUBIT_MQTT_PASSWORD_FILE)."""
    TIMED_OUT = 5
    """No answer in time: no verdict on a schedule, no reply from the planner, a follow that gave up."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT, as shells report it)."""


class CliError(Exception):
    """A user's mistake or an unreachable peer: ``message`` is the whole story, in one line."""

    def __init__(self, message: str, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # one line, whatever a library's message held
        self.code = code


def first_line(exc: BaseException) -> str:
    """A library's exception as one short line (pandas' and pyarrow's run to several)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
