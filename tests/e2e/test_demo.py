import subprocess
import sys

import pytest

from tools.launcher import REPO


@pytest.mark.timeout(150)
def test_make_demo_runs_the_whole_flow_and_shuts_down_cleanly():
    run = subprocess.run([sys.executable, "-m", "tools.demo"], cwd=REPO, capture_output=True, text=True, timeout=140)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "Summary: 12 commands: 3 cancelled, 9 completed" in out
    assert "asset is FAULTED" in out and "reason: early departure" in out
    shutdown = next(line for line in out.splitlines() if line.startswith("Shutdown: "))
    assert sorted(shutdown.removeprefix("Shutdown: ").split(", ")) == sorted(
        f"{name} exit 0" for name in ("ingester", "planner", "tracker", "gateway-ocpp", "chargepoint-simulator",
                                      "battery-simulator", "gateway-modbus"))
    # the chargers over real OCPP-J: bay 1 speaks 1.6, bay 2 (which leaves early) 2.0.1
    assert "DEVICE_LINK_UP           ast_bay_1     endpoint=CP_BAY_1, reason=ocpp1.6" in out
    assert "STATE_CHANGED            ast_bay_2     CHARGING -> AVAILABLE (unplug)" in out
    assert "STATE_CHANGED            ast_batt_001  DISCHARGING -> FAULTED (fault)" in out  # over real Modbus TCP
    # the simulators stop as chargers that go away (1001), not as a crash (1011); a sound site refuses nothing
    assert "(1011)" not in out and "MESSAGE_REFUSED" not in out
    # the demo's broker is the secured one: a client without a password is turned away
    assert "tries the broker without a password: refused (Not authorized)" in out
