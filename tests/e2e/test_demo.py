import subprocess
import sys

import pytest

from services.launcher import REPO


@pytest.mark.timeout(150)
def test_make_demo_runs_the_whole_flow_and_shuts_down_cleanly():
    run = subprocess.run([sys.executable, "-m", "services.demo"], cwd=REPO, capture_output=True, text=True, timeout=140)
    out = run.stdout
    assert run.returncode == 0, out + run.stderr
    assert "Summary: 12 commands: 3 cancelled, 9 completed" in out
    assert "asset is FAULTED" in out and "reason: early departure" in out
    assert ("Shutdown: ingester exit 0, planner exit 0, tracker exit 0, gateway-loopback exit 0, "
            "battery-simulator exit 0, gateway-modbus exit 0") in out
    assert "STATE_CHANGED            ast_batt_001  DISCHARGING -> FAULTED (fault)" in out  # over real Modbus TCP
