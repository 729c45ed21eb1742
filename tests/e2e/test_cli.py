"""The operator CLI against the running stack, as an operator types it."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from tools.launcher import REPO

pytestmark = pytest.mark.timeout(120)


ROLE = {"publish": "layer3", "status": "operator", "estop": "operator"}
"""Who types each command on a site (docs/security.md); the rest read as SCADA."""


def qubit(stack, *args, timeout=60, identity=None):
    env = stack.env_as(identity or ROLE.get(args[0], "scada"))
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_publish_follow_states_status_and_events(stack, tmp_path):
    stack.start_all()
    idx = pd.date_range(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2), periods=3, freq="2s")
    csv = tmp_path / "schedule.csv"
    pd.DataFrame({"ev_001_kw": [11.0, 22.0, 0.0], "price_per_kwh": [0.1, 0.2, 0.1]}, index=idx).to_csv(csv)
    (tmp_path / "map.json").write_text(json.dumps({"ev_001": "ast_bay_1"}))

    published = qubit(stack, "publish", str(csv), "--asset-map", str(tmp_path / "map.json"),
                      "--schedule-id", "sch_cli_1", "--follow", "--timeout", "40")
    assert published.returncode == 0, published.stdout + published.stderr
    assert "published sch_cli_1: 2 columns x 3 slots" in published.stdout
    assert "sch_cli_1: 3/3 commands ended (3 completed)" in published.stdout

    states = qubit(stack, "states", "--json")
    assert json.loads(states.stdout)["ast_bay_1"]["state"] == "SUSPENDED"

    assert "\r" not in published.stdout and "planned: 3 commands" in published.stdout

    status = qubit(stack, "status", "sch_cli_1", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["command_statuses"] == {"COMPLETED": 3}
    readable = qubit(stack, "status", "sch_cli_1")
    assert readable.stdout.startswith("sch_cli_1: COMPLETED") and "3 completed" in readable.stdout

    # the same schedule again: answered at once, not an hour of --follow
    resent = qubit(stack, "publish", str(csv), "--asset-map", str(tmp_path / "map.json"),
                   "--schedule-id", "sch_cli_1", "--follow", "--timeout", "40")
    assert resent.returncode == 0 and "already planned, nothing changed" in resent.stdout, resent.stdout
    missing = qubit(stack, "status", "cmd_000000000000")
    assert missing.returncode == 1 and "no command cmd_000000000000 known" in missing.stderr

    bad = tmp_path / "bad.csv"
    pd.DataFrame({"ev_001_kw": [-1.0]}, index=idx[:1]).to_csv(bad)
    rejected = qubit(stack, "publish", str(bad), "--asset-map", "ev_001=ast_bay_1")  # waits for the verdict
    assert rejected.returncode == 1 and "rejected: negative_power" in rejected.stdout

    # events: a narrower filter gets a subset, JSON lines for machines
    stack_events = subprocess.Popen([sys.executable, "-m", "tools.cli", "events", "--json",
                                     "--type", "SCHEDULE_RECEIVED", "--count", "1", "--timeout", "30"],
                                    env=stack.env_as("scada"), cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    assert stack_events.stderr is not None  # stderr=PIPE
    # subscribed: nothing published now is missed
    assert stack_events.stderr.readline().startswith("qubit: listening on")
    pd.DataFrame({"ev_001_kw": [5.0]}, index=idx[:1] + timedelta(hours=1)).to_csv(csv)
    qubit(stack, "publish", str(csv), "--asset-map", "ev_001=ast_bay_1", "--no-wait")
    out, _ = stack_events.communicate(timeout=40)
    (line,) = out.strip().splitlines()
    assert json.loads(line)["event_type"] == "SCHEDULE_RECEIVED"


def test_cli_says_clearly_when_the_broker_is_away(tmp_path):
    env = {"QUBIT_MQTT_PORT": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "tools.cli", "states"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 3 and "cannot reach the MQTT broker at 127.0.0.1:1" in run.stderr


def test_cli_says_clearly_when_the_broker_refuses_its_credentials(stack, tmp_path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    env = stack.env_as("scada") | {"QUBIT_MQTT_PASSWORD_FILE": str(wrong)}
    run = subprocess.run([sys.executable, "-m", "tools.cli", "states"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=30)
    assert run.returncode == 4 and "refused our credentials as user scada" in run.stderr, run.stderr
    assert "not-the-password" not in run.stderr + run.stdout


def test_publish_reads_parquet_too(stack, tmp_path):
    stack.start_all()
    idx = pd.date_range(datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1), periods=2, freq="2s")
    path = tmp_path / "schedule.parquet"
    pd.DataFrame({"battery_charge_kw": [20.0, 0.0], "battery_discharge_kw": [0.0, 10.0]}, index=idx).to_parquet(path)
    run = qubit(stack, "publish", str(path), "--asset-map", "battery=ast_batt_001", "--schedule-id", "sch_pq",
                "--follow", "--timeout", "40")
    assert run.returncode == 0, run.stdout + run.stderr
    # Both commands end; on a loaded machine the first may still be unconfirmed when the second
    # falls due two seconds later, and is then cancelled as superseded (never applied after it).
    ended = [line for line in run.stdout.splitlines() if line.startswith("sch_pq: 2/2 commands ended")]
    assert ended and "completed)" in ended[-1], run.stdout
