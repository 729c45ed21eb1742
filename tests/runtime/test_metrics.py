import json
import re
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator import DispatchEngine, Event, EventBus, EventType
from coordinator.adapters.base import ProtocolAdapter
from coordinator.base import Command, CommandStatus, CommandType
from coordinator.contract import events as ev
from coordinator.runtime import metrics as metrics_module
from coordinator.runtime.metrics import DEFAULT_METRICS_PORT, ServiceMetrics, metrics_port_from_env
from coordinator.timeutil import utcnow

SECOND = timedelta(seconds=1)
T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)


def command(command_id="cmd_1", status=CommandStatus.DISPATCHED, scheduled_at=T0, dispatched_at=T0, attempts=1):
    return Command("ast_a", CommandType.STOP_CHARGING, scheduled_at=scheduled_at, command_id=command_id,
                   status=status, attempts=attempts, dispatched_at=dispatched_at)


def dispatched(cmd):
    return ev.CommandDispatched.of(cmd, protocol="echo", gateway_id="gw")


class EchoAdapter(ProtocolAdapter):
    protocol = "echo"

    def translate(self, command):
        return {"asset": command.asset_id, **command.parameters}


def sample(metrics, name, **labels):
    """The value of one sample of ``metrics.render()``; None if there is no such sample."""
    labels = {"service": metrics.service, **labels}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def bucket(metrics, histogram, le):
    return sample(metrics, f"{histogram}_bucket", le=le)


@pytest.fixture
def observed():
    bus = EventBus()
    metrics = ServiceMetrics("planner")
    metrics.observe_bus(bus)
    yield bus, metrics
    metrics.close()


def engine_with_schedule(bus, start, kw=(7.0, 11.0)):
    engine = DispatchEngine(event_bus=bus)
    df = pd.DataFrame({"ev_1_kw": list(kw)}, index=pd.date_range(start, periods=len(kw), freq="15min"))
    return engine, engine.schedule_to_commands(df, {"ev_1": "ast_a"}, schedule_id="sch_1")


def test_a_command_through_a_real_engine_counts_statuses_and_both_latencies(observed):
    bus, metrics = observed
    start = utcnow() - 3 * SECOND  # the slot began 3 s ago: the dispatch is ~3 s late
    engine, (c1, _c2) = engine_with_schedule(bus, start)
    assert sample(metrics, "qubit_commands_total", status="PENDING") == 2

    assert engine.get_pending_commands() == [c1]
    before = utcnow()
    assert engine.dispatch_command(c1, EchoAdapter("gw")) is not None
    after = utcnow()
    engine.handle_acknowledgement(c1)
    assert engine.handle_response(c1, success=True) is CommandStatus.COMPLETED

    for status, count in [("PENDING", 2), ("DISPATCHED", 1), ("ACKNOWLEDGED", 1), ("COMPLETED", 1),
                          ("FAILED", 0), ("TIMED_OUT", 0), ("CANCELLED", 0)]:
        assert sample(metrics, "qubit_commands_total", status=status) == count, status

    h = "qubit_schedule_to_dispatch_seconds"
    assert sample(metrics, f"{h}_count") == 1
    late = sample(metrics, f"{h}_sum")
    assert (before - start).total_seconds() <= late <= (after - start).total_seconds()
    assert bucket(metrics, h, "2.5") == 0 and bucket(metrics, h, "5.0") == 1

    h = "qubit_dispatch_to_ack_seconds"
    assert sample(metrics, f"{h}_count") == 1
    assert 0 <= sample(metrics, f"{h}_sum") < 1 and bucket(metrics, h, "1.0") == 1

    assert sample(metrics, "qubit_events_total", event_type="SCHEDULE_RECEIVED") == 1
    assert sample(metrics, "qubit_events_total", event_type="COMMAND_CREATED") == 2
    assert sample(metrics, "qubit_events_total", event_type="COMMAND_COMPLETED") == 1
    assert sample(metrics, "qubit_command_retries_total") == 0


def test_retries_count_and_only_the_first_attempt_feeds_schedule_to_dispatch(observed):
    bus, metrics = observed
    engine, (c1, _) = engine_with_schedule(bus, utcnow() - SECOND)
    engine.dispatch_command(c1, EchoAdapter("gw"))
    assert engine.handle_response(c1, success=False, error="busy") is CommandStatus.PENDING
    assert sample(metrics, "qubit_command_retries_total") == 1
    assert sample(metrics, "qubit_commands_total", status="PENDING") == 3  # 2 created + 1 back to pending
    engine.handle_acknowledgement(c1)  # a late ack of the failed attempt: ignored by the engine

    engine.dispatch_command(c1, EchoAdapter("gw"))  # the retry, after its backoff
    assert c1.attempts == 2
    engine.handle_acknowledgement(c1)
    engine.handle_response(c1, success=True)
    assert sample(metrics, "qubit_schedule_to_dispatch_seconds_count") == 1  # backoff is not dispatch lag
    assert sample(metrics, "qubit_dispatch_to_ack_seconds_count") == 1  # the retry's ack, timed from the retry
    assert sample(metrics, "qubit_dispatch_to_ack_seconds_sum") < 1
    assert sample(metrics, "qubit_commands_total", status="DISPATCHED") == 2


def test_held_commands_are_not_counted_as_a_status_change(observed):
    bus, metrics = observed
    engine, (c1, _) = engine_with_schedule(bus, utcnow() - SECOND)
    engine.set_asset_state("ast_a", "FAULTED")
    assert engine.dispatch_command(c1, EchoAdapter("gw")) is None
    assert sample(metrics, "qubit_events_total", event_type="COMMAND_HELD") == 1
    assert sample(metrics, "qubit_commands_total", status="PENDING") == 2


def test_schedule_lag_from_payload_times_ack_lag_from_event_times_negative_lags_clip_to_zero(observed):
    bus, metrics = observed
    t0 = T0
    cmd = command(dispatched_at=t0 + 1.5 * SECOND)
    # the ack is timed between the two events' own times
    bus.publish(Event(EventType.COMMAND_DISPATCHED, dispatched(cmd), t0 + 100 * SECOND))
    cmd.status = CommandStatus.ACKNOWLEDGED
    bus.publish(Event(EventType.COMMAND_ACKNOWLEDGED, ev.CommandAcknowledged.of(cmd), t0 + 100.25 * SECOND))
    assert sample(metrics, "qubit_schedule_to_dispatch_seconds_sum") == 1.5
    assert sample(metrics, "qubit_dispatch_to_ack_seconds_sum") == 0.25

    # dispatched before its slot (a clock step): recorded as 0, not as a negative lag
    bus.emit(EventType.COMMAND_DISPATCHED, dispatched(command("cmd_2", scheduled_at=t0 + 10 * SECOND)))
    assert sample(metrics, "qubit_schedule_to_dispatch_seconds_count") == 2
    assert sample(metrics, "qubit_schedule_to_dispatch_seconds_sum") == 1.5
    assert bucket(metrics, "qubit_schedule_to_dispatch_seconds", "0.001") == 1


def test_dispatch_times_are_forgotten_on_final_events_and_capped(observed, monkeypatch):
    bus, metrics = observed
    bus.emit(EventType.COMMAND_DISPATCHED, dispatched(command()))
    bus.emit(EventType.COMMAND_FAILED, ev.CommandFailed.of(command(status=CommandStatus.FAILED)))
    bus.emit(EventType.COMMAND_ACKNOWLEDGED, ev.CommandAcknowledged.of(command(status=CommandStatus.ACKNOWLEDGED)))
    assert sample(metrics, "qubit_dispatch_to_ack_seconds_count") == 0  # no attempt was waiting any more

    monkeypatch.setattr(metrics_module, "MAX_TRACKED_DISPATCHES", 3)
    for n in range(5):
        bus.emit(EventType.COMMAND_DISPATCHED, dispatched(command(f"cmd_{n}")))
    for n in range(5):
        bus.emit(EventType.COMMAND_ACKNOWLEDGED, ev.CommandAcknowledged.of(command(f"cmd_{n}")))
    assert sample(metrics, "qubit_dispatch_to_ack_seconds_count") == 3  # the two oldest were dropped
    assert len(metrics._dispatched_at) == 0


def test_device_link_gauge_follows_gateway_events(observed):
    bus, metrics = observed
    assert sample(metrics, "qubit_device_link_up", asset_id="ast_a") is None  # unknown until a gateway says
    bus.emit(EventType.DEVICE_LINK_UP, {"asset_id": "ast_a", "endpoint": "10.0.0.5:502", "reason": ""})
    bus.emit(EventType.DEVICE_LINK_UP, {"asset_id": "ast_b", "endpoint": "cp_2", "reason": ""})
    assert sample(metrics, "qubit_device_link_up", asset_id="ast_a") == 1
    bus.emit(EventType.DEVICE_LINK_DOWN, {"asset_id": "ast_a", "endpoint": "10.0.0.5:502", "reason": "timeout"})
    assert sample(metrics, "qubit_device_link_up", asset_id="ast_a") == 0
    assert sample(metrics, "qubit_device_link_up", asset_id="ast_b") == 1
    assert sample(metrics, "qubit_events_total", event_type="DEVICE_LINK_DOWN") == 1


def test_reconnects_are_read_at_scrape_time():
    metrics = ServiceMetrics("tracker")
    assert sample(metrics, "qubit_broker_reconnects_total") is None  # nothing watched yet
    count = [0]
    metrics.watch_reconnects(lambda: count[0])
    assert sample(metrics, "qubit_broker_reconnects_total") == 0
    count[0] = 4
    assert sample(metrics, "qubit_broker_reconnects_total") == 4
    assert "# TYPE qubit_broker_reconnects_total counter" in metrics.render().decode()


def test_a_broken_reconnect_getter_does_not_break_the_scrape(caplog):
    metrics = ServiceMetrics("tracker")

    def broken_getter() -> int:
        raise ZeroDivisionError("division by zero")

    metrics.watch_reconnects(broken_getter)
    metrics.set_emergency_stop(True)
    assert sample(metrics, "qubit_broker_reconnects_total") is None
    assert sample(metrics, "qubit_emergency_stop_active") == 1
    assert "cannot read the broker reconnect count" in caplog.text


def test_module_state_gauges_mark_exactly_the_current_states():
    metrics = ServiceMetrics("planner")
    metrics.set_module_state("Initializing", "Idle", "Healthy")
    metrics.set_module_state("Active", "Running", "Warning")
    lifecycle = {s: sample(metrics, "qubit_service_lifecycle_state", state=s)
                 for s in ("Offline", "Initializing", "Active", "Recovering", "ShuttingDown")}
    assert lifecycle == {"Offline": 0, "Initializing": 0, "Active": 1, "Recovering": 0, "ShuttingDown": 0}
    assert sample(metrics, "qubit_service_operational_state", state="Running") == 1
    assert sample(metrics, "qubit_service_operational_state", state="Idle") == 0
    assert sample(metrics, "qubit_service_health_state", state="Warning") == 1
    assert sample(metrics, "qubit_service_health_state", state="Healthy") == 0

    with pytest.raises(ValueError,
                       match="'Exploded' is not a health state; expected one of Healthy, Warning, Critical"):
        metrics.set_module_state("Offline", "Stopped", "Exploded")
    assert sample(metrics, "qubit_service_lifecycle_state", state="Active") == 1  # nothing changed


def test_emergency_stop_gauge_by_call_and_by_event(observed):
    bus, metrics = observed
    assert sample(metrics, "qubit_emergency_stop_active") == 0
    metrics.set_emergency_stop(True)
    assert sample(metrics, "qubit_emergency_stop_active") == 1
    order = {"reason": "drill", "issued_by": "operator", "ordered_at": T0}
    bus.emit(EventType.EMERGENCY_STOP_RESET, order)
    assert sample(metrics, "qubit_emergency_stop_active") == 0
    bus.emit(EventType.EMERGENCY_STOP_ACTIVATED, order)
    assert sample(metrics, "qubit_emergency_stop_active") == 1


def test_instances_have_their_own_registries():
    a, b = ServiceMetrics("planner"), ServiceMetrics("tracker")
    bus = EventBus()
    a.observe_bus(bus)
    bus.emit(EventType.COMMAND_CREATED, ev.CommandCreated.of(command(status=CommandStatus.PENDING, dispatched_at=None,
                                                                     attempts=0)))
    assert sample(a, "qubit_commands_total", status="PENDING") == 1
    assert sample(b, "qubit_commands_total", status="PENDING") == 0
    assert b'service="planner"' not in b.render()


def test_serve_on_an_ephemeral_port_answers_scrapes_until_closed():
    metrics = ServiceMetrics("gateway")
    bus = EventBus()
    metrics.observe_bus(bus)
    bus.emit(EventType.DEVICE_LINK_UP, {"asset_id": "ast_a", "endpoint": "cp_a", "reason": ""})
    port = metrics.serve(0, host="127.0.0.1")
    try:
        assert port > 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = response.read().decode()
        assert 'qubit_device_link_up{asset_id="ast_a",service="gateway"} 1.0' in body
        assert 'qubit_events_total{event_type="DEVICE_LINK_UP",service="gateway"} 1.0' in body

        other = ServiceMetrics("gateway")
        with pytest.raises(OSError):
            other.serve(port, host="127.0.0.1")  # taken
        with pytest.raises(RuntimeError, match="already served"):
            metrics.serve(0, host="127.0.0.1")
    finally:
        metrics.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    metrics.close()  # idempotent


def test_serve_refuses_impossible_ports():
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        ServiceMetrics("planner").serve(70000)


@pytest.mark.parametrize(
    ("value", "port"),
    [(None, DEFAULT_METRICS_PORT), ("9100", 9100), (" 9100 ", 9100), ("0", 0),
     ("off", None), ("OFF", None), ("", None)],
)
def test_metrics_port_from_env(value, port, monkeypatch):
    env = {} if value is None else {"QUBIT_METRICS_PORT": value}
    assert metrics_port_from_env(env) == port
    monkeypatch.delenv("QUBIT_METRICS_PORT", raising=False)
    if value is not None:
        monkeypatch.setenv("QUBIT_METRICS_PORT", value)
    assert metrics_port_from_env() == port  # the process environment by default


@pytest.mark.parametrize("value", ["nine", "9100.5", "70000", "-1"])
def test_metrics_port_from_env_refuses_nonsense(value):
    message = "must be 'off' or a port number 0-65535"
    with pytest.raises(ValueError, match=f"QUBIT_METRICS_PORT='{value}': {message}"):
        metrics_port_from_env({"QUBIT_METRICS_PORT": value})


def test_publish_failures_count_by_reason_with_every_reason_present_from_the_start():
    metrics = ServiceMetrics("gw")
    assert sample(metrics, "qubit_publish_failures_total", reason="qos0_offline") == 0
    metrics.count_publish_failure(ev.PublishFailureReason.QOS0_OFFLINE, 37)
    metrics.count_publish_failure("too_large")
    assert sample(metrics, "qubit_publish_failures_total", reason="qos0_offline") == 37
    assert sample(metrics, "qubit_publish_failures_total", reason="too_large") == 1
    with pytest.raises(ValueError):
        metrics.count_publish_failure("no_such_reason")


def test_pending_publishes_are_read_at_scrape_time():
    metrics = ServiceMetrics("planner")
    counts = {"unconfirmed": 3, "overflow": 0}
    metrics.watch_publishes(lambda: counts["unconfirmed"], lambda: counts["overflow"])
    assert (sample(metrics, "qubit_publish_pending"), sample(metrics, "qubit_publish_overflow")) == (3, 0)
    counts.update(unconfirmed=60_000, overflow=10_000)
    assert (sample(metrics, "qubit_publish_pending"), sample(metrics, "qubit_publish_overflow")) == (60_000, 10_000)


def test_a_failure_report_counts_and_emits_but_never_reports_its_own_failure_again():
    from coordinator.runtime.mqtt import PublishFailure
    from coordinator.runtime.service import PublishFailureReport

    metrics, bus = ServiceMetrics("gw"), EventBus()
    report = PublishFailureReport(bus, metrics)
    seen: list[ev.PublishFailed] = []

    def forward(event: Event) -> None:
        assert isinstance(event.payload, ev.PublishFailed)
        seen.append(event.payload)
        # The event itself cannot be sent either: the client reports that from inside the emit.
        report(PublishFailure("qubit/events/PUBLISH_FAILED/site", ev.PublishFailureReason.REFUSED, 300,
                              detail="paho said no"))

    bus.subscribe(EventType.PUBLISH_FAILED, forward)
    report(PublishFailure("qubit/results/gw", ev.PublishFailureReason.TOO_LARGE, 2_000_000, limit_bytes=1 << 20))
    assert [(p.reason, p.limit_bytes) for p in seen] == [(ev.PublishFailureReason.TOO_LARGE, 1 << 20)]
    assert sample(metrics, "qubit_publish_failures_total", reason="too_large") == 1
    assert sample(metrics, "qubit_publish_failures_total", reason="refused") == 1


# -- per-asset gauges and the Grafana dashboard -------------------------------------------


def completed(asset_id, command_type, power_kw, command_id):
    cmd = Command(asset_id, command_type, {"power_kw": power_kw}, scheduled_at=T0, command_id=command_id,
                  status=CommandStatus.COMPLETED, attempts=1, dispatched_at=T0)
    return Event(EventType.COMMAND_COMPLETED, ev.CommandCompleted.of(cmd))


def test_setpoint_gauge_follows_completed_rates_signed_and_ignores_limits(observed):
    bus, metrics = observed
    bus.publish(completed("ast_batt", CommandType.SET_CHARGE_RATE, 30.0, "cmd_a"))
    assert sample(metrics, "qubit_asset_setpoint_kw", asset_id="ast_batt") == 30.0
    bus.publish(completed("ast_batt", CommandType.SET_DISCHARGE_RATE, 25.0, "cmd_b"))
    assert sample(metrics, "qubit_asset_setpoint_kw", asset_id="ast_batt") == -25.0
    bus.publish(completed("ast_batt", CommandType.SET_POWER_LIMIT, 10.0, "cmd_c"))  # a cap, not a setpoint
    assert sample(metrics, "qubit_asset_setpoint_kw", asset_id="ast_batt") == -25.0
    assert sample(metrics, "qubit_asset_setpoint_kw", asset_id="ast_other") is None  # no sample before any


def test_telemetry_feeds_power_and_soc_gauges_and_ignores_what_is_not_a_number():
    metrics = ServiceMetrics("gateway-modbus")
    metrics.observe_telemetry("ast_batt", {"active_power_kw": -12.5, "soc_percent": 61, "mode": "DISCHARGING"})
    assert sample(metrics, "qubit_asset_power_kw", asset_id="ast_batt") == -12.5
    assert sample(metrics, "qubit_asset_soc_percent", asset_id="ast_batt") == 61
    metrics.observe_telemetry("ast_batt", {"power_kw": "lots", "soc_percent": True})  # untrusted shapes
    assert sample(metrics, "qubit_asset_power_kw", asset_id="ast_batt") == -12.5
    assert sample(metrics, "qubit_asset_soc_percent", asset_id="ast_batt") == 61
    metrics.observe_telemetry("ast_bay_1", {"power_kw": 7.2})  # OCPP's key
    assert sample(metrics, "qubit_asset_power_kw", asset_id="ast_bay_1") == 7.2


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "qubit-site.json"
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "increase", "irate", "histogram_quantile", "vector",
                "by", "without", "or", "and", "unless", "label_values", "le", "on", "ignoring"}


def exported_names() -> set[str]:
    """Every series name a process can export: families and their samples' suffixes."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = set()
    for family in ServiceMetrics("any").registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers outside label matchers, ranges and strings."""
    expr = re.sub(r"label_values\((.*),\s*\w+\)", r"\1", expr)  # Grafana's variable query: (series, label)
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)', " ", expr)
    return {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare) if w not in PROMQL_WORDS}


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return exprs


def test_the_dashboard_queries_only_metrics_the_code_exports():
    exported, queries = exported_names(), dashboard_queries()
    assert len(queries) > 10
    for expr in queries:
        assert metric_names(expr) <= exported, expr
    read = set().union(*map(metric_names, queries))
    for wanted in ("qubit_asset_power_kw", "qubit_asset_soc_percent", "qubit_asset_setpoint_kw", "qubit_commands_total",
                   "qubit_messages_refused_total", "qubit_publish_failures_total", "qubit_service_health_state"):
        assert wanted in read, wanted
    assert metric_names('sum by (x) (rate(qubit_nope_total{a="b"}[5m]))') == {"qubit_nope_total"}  # the check checks
