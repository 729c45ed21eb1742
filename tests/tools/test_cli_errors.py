"""Every user mistake of the issue: one line on stderr naming the thing, a documented exit code."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tools import cli
from tools.cli_errors import ExitCode
from tools.launcher import REPO

GOOD_ROW = "2026-01-01T00:00:00+00:00,1.0\n"


def run(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.err, out.err
    return code, lines[0]


def schedule(tmp_path, body, name="s.csv"):
    path = tmp_path / name
    path.write_text("ts,ev_001_kw\n" + body)
    return str(path)


@pytest.mark.parametrize(("body", "says"), [
    (None, "no such file"),
    ('"2026-01-01,1\n', "not a readable CSV file"),
    ("2026-01-01T00:00:00+00:00,abc\n", "column ev_001_kw, slot 2026-01-01T00:00:00+00:00: 'abc' is not a number"),
    ("not-a-date,1\n", "row 1: timestamp 'not-a-date' is not an ISO 8601 date"),
    ("2026-01-01T00:00:00,1\n", "has no UTC offset"),
])
def test_schedule_file_mistakes(capsys, tmp_path, body, says):
    path = str(tmp_path / "missing.csv") if body is None else schedule(tmp_path, body)
    code, line = run(capsys, "publish", path, "--asset-map", "ev_001=ast_bay_1")
    assert code == ExitCode.USAGE and line.startswith(f"qubit: {path}: ") and says in line


def test_asset_map_json_syntax_error(capsys, tmp_path):
    bad = tmp_path / "map.json"
    bad.write_text('{"ev_001": ')
    code, line = run(capsys, "publish", schedule(tmp_path, GOOD_ROW), "--asset-map", str(bad))
    assert code == ExitCode.USAGE and line == f"qubit: {bad}: not valid JSON: Expecting value (line 1, column 12)"


def test_site_config_toml_error_and_missing_file(capsys, tmp_path):
    toml = tmp_path / "site.toml"
    toml.write_text("[site\n")
    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads(toml.read_text())
    for path, says in ((toml, "not valid TOML"), (tmp_path / "nope.toml", "cannot read the site config")):
        with pytest.raises(SystemExit) as exited:
            cli.main(["--site-config", str(path), "publish", schedule(tmp_path, GOOD_ROW), "--asset-map", "ev_001=a"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exited.value.code == ExitCode.USAGE and len(err) == 1
        assert err[0].startswith(f"{path}: ") and says in err[0]


def test_event_type_filter_lists_the_valid_types(capsys):
    code, line = run(capsys, "events", "--type", "NOT_A_TYPE")
    assert code == ExitCode.USAGE and "not an event type; one of COMMAND_CREATED" in line and "MESSAGE_REFUSED" in line


def test_bad_port_setting_and_unreachable_broker():
    env = {"PATH": "/usr/bin:/bin", "QUBIT_MQTT_PORT": "abc"}
    bad = subprocess.run([sys.executable, "-m", "tools.cli", "states"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == ExitCode.USAGE
    assert bad.stderr.strip() == "QUBIT_MQTT_PORT='abc': must be an integer 1-65535"
    away = subprocess.run([sys.executable, "-m", "tools.cli", "states"], env=env | {"QUBIT_MQTT_PORT": "1"}, cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert away.returncode == ExitCode.UNREACHABLE
    assert away.stderr.strip() == "qubit: cannot reach the MQTT broker at 127.0.0.1:1 (QUBIT_MQTT_HOST/PORT)"


def test_status_progress_words():
    assert cli.schedule_progress({"status": "planned", "command_statuses": {"COMPLETED": 3}}) == "COMPLETED"
    assert cli.schedule_progress({"status": "planned", "command_statuses": {"COMPLETED": 2, "FAILED": 1}}) == "FAILED"
    assert cli.schedule_progress({"status": "planned", "command_statuses": {"COMPLETED": 1, "PENDING": 1}}) \
        == "IN_PROGRESS"
    assert cli.schedule_progress({"status": "rejected", "command_statuses": {}}) == "REJECTED"


def scripts():
    text = (Path(REPO) / "pyproject.toml").read_text()
    return sorted(tomllib.loads(text)["project"]["scripts"])


@pytest.mark.parametrize("script", scripts())
def test_every_console_script_answers_help_without_running(script):
    exe = Path(sys.executable).parent / script
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stdout + done.stderr
    assert "QUBIT_" in done.stdout and "starting" not in done.stdout


def test_the_verdict_on_a_schedule():
    from coordinator.contract.events import SchedulePlanned, ScheduleRejected

    def rejected(reason):
        return ScheduleRejected(schedule_id="sch_1", reason=reason, message="m", site_id="sit_1")

    planned = SchedulePlanned(schedule_id="sch_1", version=1, site_id="sit_1", command_count=3, asset_count=1,
                              superseded=0, first_due_at=None)
    assert cli.verdict(planned, "sch_1") == ("planned: 3 commands, 0 superseded", ExitCode.OK)
    assert cli.verdict(rejected("negative_power"), "sch_1") == ("rejected: negative_power: m", ExitCode.FAILED)
    assert cli.verdict(rejected("already_planned"), "sch_1") == ("already planned, nothing changed: m", ExitCode.OK)
    assert cli.verdict(planned, "sch_other") is None
    assert cli.progress({"c1": "COMPLETED", "c2": "DISPATCHED"}, 3) == "1/3 commands ended (1 completed, 1 dispatched)"
