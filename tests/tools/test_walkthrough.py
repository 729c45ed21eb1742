from tools import walkthrough


def test_walkthrough_shows_retry_hold_and_early_departure(capsys):
    assert walkthrough.main() == 0
    out = capsys.readouterr().out
    assert "COMMAND_RETRY_SCHEDULED  ast_bay_1" in out
    assert "COMMAND_HELD             ast_batt_001  cmd_" in out
    assert "SET_DISCHARGE_RATE(power_kw=40.0)  asset is FAULTED" in out
    assert "reason: early departure: vehicle unplugged while CHARGING" in out
    assert "Summary: 10 completed, 2 cancelled" in out
