"""A process's own state: the health rules (pure) and the Supervisor that publishes it."""

from datetime import UTC, datetime

import pytest

from coordinator.contract.messages import EmergencyStop, ServiceStatus, decode
from coordinator.contract.topics import service_topic
from coordinator.events import Event, EventBus, EventType
from coordinator.runtime.supervision import (
    BACKLOG_CRITICAL,
    BACKLOG_WARNING,
    Conditions,
    Supervisor,
    assess,
    health_events,
)
from coordinator.state.state_events import EventType as StateEventType
from coordinator.state.state_types import HealthState

H, W, C = HealthState.HEALTHY, HealthState.WARNING, HealthState.CRITICAL


@pytest.mark.parametrize("conditions, health, reason", [
    (Conditions(), H, None),
    (Conditions(broker_connected=False), W, "broker unreachable"),
    (Conditions(links_down=frozenset({"ast_b"}), links_total=2), W, "device link down: ast_b"),
    (Conditions(links_down=frozenset({"ast_a", "ast_b"}), links_total=2), C, "device link down: ast_a, ast_b"),
    (Conditions(backlog=BACKLOG_WARNING - 1), H, None),
    (Conditions(backlog=BACKLOG_WARNING), W, f"backlog of {BACKLOG_WARNING} messages"),
    (Conditions(backlog=BACKLOG_CRITICAL), C, f"backlog of {BACKLOG_CRITICAL} messages"),
    (Conditions(metrics_failed="port 9464: in use"), W, "metrics not served: port 9464: in use"),
    (Conditions(config_warnings=("require_auth = false: ...",)), W, "require_auth = false: ..."),
])
def test_assess(conditions, health, reason):
    got, reasons = assess(conditions)
    assert got is health
    assert (reasons == ()) if reason is None else (reason in reasons)


def test_critical_keeps_the_warnings_as_reasons():
    health, reasons = assess(Conditions(broker_connected=False, backlog=BACKLOG_CRITICAL))
    assert health is C and reasons == (f"backlog of {BACKLOG_CRITICAL} messages", "broker unreachable")


@pytest.mark.parametrize("current, target, words, to", [
    (H, H, [], None), (W, W, [], None), (C, C, [], None),
    (H, W, [StateEventType.WARN], None), (W, H, [StateEventType.CLEAR_WARNING], None),
    (H, C, [StateEventType.FAULT], None), (W, C, [StateEventType.FAULT], None),
    (C, H, [StateEventType.RECOVER], "Healthy"), (C, W, [StateEventType.RECOVER], "Warning"),
])
def test_health_events(current, target, words, to):
    events = health_events(current, target, ("why",))
    assert [e.event_type for e in events] == words
    payloads = [e.payload for e in events]
    if to is not None:
        assert payloads[0] is not None and payloads[0]["to"] == to
    assert all(p is not None and p["reasons"] == ["why"] for p in payloads)


class Recorder:
    def __init__(self):
        self.published: list[tuple[str, bytes, dict]] = []

    def __call__(self, topic, payload, **kwargs):
        self.published.append((topic, payload, kwargs))

    def statuses(self) -> list[ServiceStatus]:
        return [decode(ServiceStatus, p) for t, p, _ in self.published if t == service_topic("gateway-x")]

    def last(self) -> tuple[str, str, str]:
        s = self.statuses()[-1]
        return s.lifecycle, s.operational, s.health


def supervisor(**options):
    publish, bus = Recorder(), EventBus()
    changes: list[Event] = []
    bus.subscribe(EventType.SERVICE_STATE_CHANGED, changes.append)
    return Supervisor("gateway-x", publish, bus, **({"first_link_grace": 0.0} | options)), publish, changes


ORDER = EmergencyStop(active=True, reason="fire alarm", issued_by="op@site", at=datetime(2026, 1, 1, tzinfo=UTC))


def test_a_started_process_is_active_running_healthy_and_says_so_retained():
    sup, publish, changes = supervisor()
    sup.started()
    assert publish.last() == ("Active", "Running", "Healthy")
    assert all(kwargs == {"qos": 1, "retain": True} for _, _, kwargs in publish.published)
    assert changes[-1].payload["previous"] == {"lifecycle": "Offline", "operational": "Idle", "health": "Healthy"}
    assert publish.statuses()[-1].status == "online"


def test_health_follows_what_the_process_sees_and_only_changes_are_published():
    sup, publish, _ = supervisor()
    sup.started()
    sup.update(links_down=frozenset({"ast_1"}), links_total=2)
    assert publish.last()[2] == "Warning" and publish.statuses()[-1].reasons == ["device link down: ast_1"]
    count = len(publish.published)
    sup.update(links_down=frozenset({"ast_1"}), links_total=2)  # nothing new
    assert len(publish.published) == count
    sup.update(links_down=frozenset({"ast_1", "ast_2"}))
    assert publish.last()[2] == "Critical"
    sup.update(links_down=frozenset())
    assert publish.last() == ("Active", "Running", "Healthy") and publish.statuses()[-1].reasons == []


def test_a_broker_outage_is_seen_but_told_over_mqtt_only_once_the_broker_is_back():
    sup, publish, changes = supervisor()
    sup.started()
    count = len(publish.published)
    sup.update(broker_connected=False)
    assert sup.machine.get_health_state() is HealthState.WARNING  # the metrics gauge shows it at once
    assert changes[-1].payload["reasons"] == ["broker unreachable"]
    assert len(publish.published) == count  # a retained status queued now would land after the newer one
    sup.update(broker_connected=True)
    assert publish.last() == ("Active", "Running", "Healthy")
    sup.republish()  # after the reconnect, once paho has re-sent what it held
    assert len(publish.published) == count + 2 and publish.last()[2] == "Healthy"


def test_emergency_stop_stops_work_keeps_the_process_active_and_holds_until_the_reset():
    sup, publish, changes = supervisor()
    sup.started()
    assert sup.emergency_stop(ORDER) is True
    assert publish.last() == ("Active", "Stopped", "Critical")  # alive and safe, not exiting
    status = publish.statuses()[-1]
    assert status.emergency_stop and status.reasons[0] == "emergency stop: fire alarm" and status.status == "online"
    assert sup.emergency_stop(ORDER) is False  # the retained order arrives again on reconnect: no second stop
    sup.update(broker_connected=False)
    sup.update(broker_connected=True)
    assert publish.last()[2] == "Critical"  # nothing seen clears an emergency stop
    assert sup.emergency_reset() is True
    assert publish.last() == ("Active", "Running", "Healthy") and not publish.statuses()[-1].emergency_stop
    assert sup.emergency_reset() is False
    # the broker outage during the stop is told (new reasons), but health stays Critical until the reset
    assert [c.payload["health"] for c in changes] == ["Healthy", "Critical", "Critical", "Critical", "Healthy"]


def test_reset_reports_what_is_still_wrong():
    sup, publish, _ = supervisor()
    sup.started()
    sup.emergency_stop(ORDER)
    sup.update(links_down=frozenset({"ast_1"}), links_total=2)
    sup.emergency_reset()
    assert publish.last() == ("Active", "Running", "Warning")


def test_a_gateway_whose_devices_have_not_connected_yet_is_waiting_not_critical():
    now = [0.0]
    sup, publish, _ = supervisor(first_link_grace=60.0, clock=lambda: now[0])
    sup.update(links_down=frozenset({"ast_1", "ast_2"}), links_total=2)  # the gateway's first report
    sup.started()
    assert publish.last()[2] == "Warning"
    assert publish.statuses()[-1].reasons == ["waiting for first connection: ast_1, ast_2"]
    sup.update(links_down=frozenset({"ast_2"}))  # ast_1 connects
    sup.update(links_down=frozenset({"ast_1", "ast_2"}))  # and drops: lost, not awaited
    assert publish.statuses()[-1].reasons == ["waiting for first connection: ast_2", "device link down: ast_1"]
    assert publish.last()[2] == "Warning"
    now[0] = 61.0  # the grace is over: nothing up is Critical
    sup.update(backlog=0)
    assert publish.last()[2] == "Critical" and publish.statuses()[-1].reasons == ["device link down: ast_1, ast_2"]


def test_sigterm_during_an_emergency_stop_still_shuts_down():
    sup, publish, _ = supervisor()
    sup.started()
    sup.emergency_stop(ORDER)
    sup.stopping()
    assert publish.last() == ("ShuttingDown", "Stopped", "Critical")


def test_sigterm_goes_through_shutting_down_to_offline():
    sup, publish, _ = supervisor()
    sup.started()
    sup.stopping()
    assert publish.last()[:2] == ("ShuttingDown", "Stopped")
    sup.stopped()
    topic, payload = sup.farewell()
    farewell = decode(ServiceStatus, payload)
    assert topic == service_topic("gateway-x")
    assert (farewell.status, farewell.lifecycle) == ("offline", "Offline")


def test_last_will_says_offline_and_why():
    sup, _, _ = supervisor()
    topic, payload = sup.last_will()
    will = decode(ServiceStatus, payload)
    assert topic == service_topic("gateway-x")
    assert (will.status, will.lifecycle, will.health) == ("offline", "Offline", "Critical")
    assert "Last Will" in will.reasons[0]
