"""The OCPP gateway's meter check after a proven setpoint. Pure."""

from services.ocpp_gateway.meter_watch import MeterWatch


def test_only_more_than_limit_plus_tolerance_within_the_window_is_reported_once():
    watch = MeterWatch()
    watch.proven("ast_1", "cmd_1", limit_kw=7.0, window=60.0, now=0.0)
    assert watch.sample("ast_1", measured_kw=2.0, tolerance_kw=0.7, now=1.0) is None  # drawing less is fine
    assert watch.sample("ast_1", measured_kw=7.7, tolerance_kw=0.7, now=2.0) is None  # within the tolerance
    broken = watch.sample("ast_1", measured_kw=7.8, tolerance_kw=0.7, now=3.0)
    assert broken is not None and (broken.command_id, broken.limit_kw) == ("cmd_1", 7.0)
    assert watch.sample("ast_1", measured_kw=9.0, tolerance_kw=0.7, now=4.0) is None  # once per command


def test_the_window_ends_and_a_newer_proof_replaces_the_older():
    watch = MeterWatch()
    watch.proven("ast_1", "cmd_1", limit_kw=7.0, window=10.0, now=0.0)
    assert watch.sample("ast_1", measured_kw=20.0, tolerance_kw=0.7, now=11.0) is None
    watch.proven("ast_1", "cmd_1", limit_kw=7.0, window=10.0, now=20.0)
    watch.proven("ast_1", "cmd_2", limit_kw=11.0, window=10.0, now=21.0)
    assert watch.sample("ast_1", measured_kw=11.5, tolerance_kw=0.7, now=22.0) is None
    watch.proven("ast_1", "cmd_3", limit_kw=0.0, window=0.0, now=23.0)  # 0: no check
    assert watch.sample("ast_1", measured_kw=50.0, tolerance_kw=0.7, now=24.0) is None
    watch.proven("ast_2", "cmd_4", limit_kw=3.0, window=10.0, now=0.0)
    watch.forget("ast_2")
    assert watch.sample("ast_2", measured_kw=50.0, tolerance_kw=0.7, now=1.0) is None
