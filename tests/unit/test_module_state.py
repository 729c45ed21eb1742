"""UnifiedStateMachine (seed 004): every documented transition, every refusal, callbacks,
the queue, async handling, cross-layer events, logging, threads, immutable events.

The seed's tables are typed out again here, from the seed page, so that a wrong entry in
the library's tables fails a test instead of being checked against itself."""

import asyncio
import copy
import itertools
import logging
import pickle
import re
import threading
import time
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from typing import Any

import pytest

import coordinator
from coordinator.state import (
    EventPriority,
    EventType,
    HealthState,
    InvalidTransitionError,
    LifecycleState,
    OperationalState,
    StateEvent,
    StateSnapshot,
    UnifiedStateMachine,
    state_types,
)

E = EventType
LOGGER = "coordinator.state.unified"

# (event, from, to) as in the seed's three tables
SEED_LIFECYCLE = [
    ("START", "Offline", "Initializing"),
    ("INIT_SUCCESS", "Initializing", "Active"),
    ("INIT_FAILURE", "Initializing", "Recovering"),
    ("SHUTDOWN", "Active", "ShuttingDown"),
    ("FINISHED", "ShuttingDown", "Offline"),
    ("FAULT_DETECTED", "Active", "Recovering"),
    ("RECOVERY_SUCCESS", "Recovering", "Active"),
    ("RECOVERY_FAILED", "Recovering", "ShuttingDown"),
]
SEED_OPERATIONAL = [
    ("SET_READY", "Idle", "Ready"),
    ("TASK_START", "Ready", "Running"),
    ("SET_BACKGROUND", "Running", "BackgroundRunning"),
    ("SET_FOREGROUND", "BackgroundRunning", "Running"),
    ("TASK_PAUSE", "Running", "Paused"),
    ("TASK_RESUME", "Paused", "Ready"),
    ("TASK_COMPLETE", "Running", "Ready"),
    ("TASK_STOP", "Running", "Stopped"),
    ("TASK_RESET", "Stopped", "Idle"),
]
HEALTH_ALL = ["Healthy", "Warning", "Critical"]
SEED_HEALTH = [
    ("WARN", "Healthy", "Warning"),
    ("CLEAR_WARNING", "Warning", "Healthy"),
    *[("FAULT", s, "Critical") for s in HEALTH_ALL],  # Any → Critical
    ("RECOVER", "Critical", "Healthy"),  # Critical → Healthy/Warning; Healthy by default
    *[("RESET", s, "Healthy") for s in HEALTH_ALL],  # Any → Healthy
]
LIFECYCLE_ALL = ["Offline", "Initializing", "Active", "Recovering", "ShuttingDown"]
OPERATIONAL_ALL = ["Idle", "Ready", "Running", "BackgroundRunning", "Paused", "Stopped"]
SEED = {
    "lifecycle": (SEED_LIFECYCLE, LIFECYCLE_ALL),
    "operational": (SEED_OPERATIONAL, OPERATIONAL_ALL),
    "health": (SEED_HEALTH, HEALTH_ALL),
}


def at(lifecycle="Offline", operational="Idle", health="Healthy", **kwargs):
    """A machine put in the given states by an admin override (then its history is cleared
    from the tests' point of view by slicing)."""
    sm = UnifiedStateMachine(module_name="test_module", **kwargs)
    sm.handle_event(StateEvent(E.PRIORITY_OVERRIDE, payload={
        "lifecycle": lifecycle, "operational": operational, "health": health}))
    return sm


def names(sm):
    return tuple(str(s) for s in (sm.get_lifecycle_state(), sm.get_operational_state(), sm.get_health_state()))


def handled(sm, skip=1):
    return [(h.event.event_type.name, h.accepted) for h in sm.history[skip:]]


# -- the tables ---------------------------------------------------------------------------


def _library_table(table):
    return sorted((e.name, str(src), str(dst)) for src, row in table.items() for e, dst in row.items())


@pytest.mark.parametrize(
    "seed, table",
    [
        (SEED_LIFECYCLE, state_types.LIFECYCLE_TRANSITIONS),
        (SEED_OPERATIONAL, state_types.OPERATIONAL_TRANSITIONS),
        (SEED_HEALTH, state_types.HEALTH_TRANSITIONS),
    ],
    ids=["lifecycle", "operational", "health"],
)
def test_library_tables_are_the_seeds(seed, table):
    assert _library_table(table) == sorted(seed)


def test_state_display_names():
    assert [str(s) for s in LifecycleState] == LIFECYCLE_ALL
    assert [str(s) for s in OperationalState] == OPERATIONAL_ALL
    assert [str(s) for s in HealthState] == HEALTH_ALL


@pytest.mark.parametrize("event, src, dst", SEED_LIFECYCLE, ids=[f"{e}:{s}" for e, s, _ in SEED_LIFECYCLE])
def test_lifecycle_transition(event, src, dst):
    sm = at(lifecycle=src, operational="Running", health="Warning")
    result = sm.handle_event(EventType[event])
    assert names(sm) == (dst, "Running", "Warning")
    assert result == StateSnapshot(LifecycleState(dst), OperationalState.RUNNING, HealthState.WARNING)


@pytest.mark.parametrize("event, src, dst", SEED_OPERATIONAL, ids=[f"{e}:{s}" for e, s, _ in SEED_OPERATIONAL])
def test_operational_transition(event, src, dst):
    sm = at(lifecycle="Active", operational=src, health="Critical")
    assert sm.handle_event(EventType[event]).operational == dst
    assert names(sm) == ("Active", dst, "Critical")


@pytest.mark.parametrize("event, src, dst", SEED_HEALTH, ids=[f"{e}:{s}" for e, s, _ in SEED_HEALTH])
def test_health_transition(event, src, dst):
    sm = at(lifecycle="Recovering", operational="Paused", health=src)
    assert sm.handle_event(EventType[event]).health == dst
    assert names(sm) == ("Recovering", "Paused", dst)


@pytest.mark.parametrize("payload, dst", [({"to": "Warning"}, "Warning"), ({"to": "Healthy"}, "Healthy"),
                                          ({"to": HealthState.WARNING}, "Warning"), ({}, "Healthy"), (None, "Healthy")])
def test_recover_target_from_payload(payload, dst):
    sm = at(health="Critical")
    sm.handle_event(StateEvent(E.RECOVER, payload=payload))
    assert sm.get_health_state() == dst


def test_recover_to_critical_is_a_value_error_and_changes_nothing():
    sm = at(health="Critical")
    with pytest.raises(ValueError, match="Healthy or Warning"):
        sm.handle_event(StateEvent(E.RECOVER, payload={"to": "Critical"}))
    with pytest.raises(ValueError, match="not a health state"):
        sm.handle_event(StateEvent(E.RECOVER, payload={"to": "Fine"}))
    assert sm.get_health_state() == HealthState.CRITICAL


def test_recover_from_healthy_names_the_requested_target():
    sm = at(health="Warning")
    with pytest.raises(InvalidTransitionError, match=r"^Cannot transition from Warning to Warning with event RECOVER$"):
        sm.handle_event(StateEvent(E.RECOVER, payload={"to": "Warning"}))


def _invalid_cases():
    for layer, (table, all_states) in SEED.items():
        targets = {event: dst for event, _, dst in table}
        for event in targets:
            valid_from = {src for e, src, _ in table if e == event}
            for state in all_states:
                if state not in valid_from:
                    yield pytest.param(layer, event, state, targets[event], id=f"{event}:{state}")


@pytest.mark.parametrize("layer, event, state, documented_target", list(_invalid_cases()))
def test_invalid_transition_raises_the_documented_message(layer, event, state, documented_target):
    # lifecycle Active, so that the operational rule about it does not interfere
    start = {"lifecycle": "Active", "operational": "Idle", "health": "Healthy", layer: state}
    sm = at(**start)
    before = sm.states
    with pytest.raises(InvalidTransitionError) as excinfo:
        sm.handle_event(EventType[event])
    assert str(excinfo.value) == f"Cannot transition from {state} to {documented_target} with event {event}"
    err = excinfo.value
    assert (err.from_state, err.to_state, err.event, err.layer, err.reason) == (
        state, documented_target, EventType[event], layer, None)
    assert sm.states == before
    assert sm.history[-1].error == str(err) and sm.history[-1].after == before


def test_every_seed_event_is_covered_by_the_invalid_cases():
    # so that the parametrisation above cannot silently shrink
    covered = {case.values[1] for case in _invalid_cases()}
    assert covered == {e for layer in SEED.values() for e, _, _ in layer[0]} - {"FAULT", "RESET"}


# -- the operational rule about lifecycle ------------------------------------------------------


@pytest.mark.parametrize("lifecycle", ["Offline", "Initializing", "Recovering", "ShuttingDown"])
@pytest.mark.parametrize("event, src, dst", [("SET_READY", "Idle", "Ready"), ("TASK_START", "Ready", "Running"),
                                             ("TASK_RESUME", "Paused", "Ready")])
def test_starting_work_needs_lifecycle_active(lifecycle, event, src, dst):
    sm = at(lifecycle=lifecycle, operational=src)
    with pytest.raises(InvalidTransitionError) as excinfo:
        sm.handle_event(EventType[event])
    assert str(excinfo.value) == (
        f"Cannot transition from {src} to {dst} with event {event}: lifecycle is {lifecycle}, not Active")
    assert excinfo.value.reason == f"lifecycle is {lifecycle}, not Active"
    assert sm.get_operational_state() == src


@pytest.mark.parametrize("lifecycle", ["Offline", "Recovering", "ShuttingDown"])
@pytest.mark.parametrize("event, src, dst", [("TASK_STOP", "Running", "Stopped"), ("TASK_PAUSE", "Running", "Paused"),
                                             ("TASK_COMPLETE", "Running", "Ready"), ("TASK_RESET", "Stopped", "Idle"),
                                             ("SET_BACKGROUND", "Running", "BackgroundRunning"),
                                             ("SET_FOREGROUND", "BackgroundRunning", "Running")])
def test_ending_or_reshaping_work_is_allowed_in_any_lifecycle(lifecycle, event, src, dst):
    sm = at(lifecycle=lifecycle, operational=src)
    sm.handle_event(EventType[event])
    assert names(sm) == (lifecycle, dst, "Healthy")


def test_health_events_do_not_depend_on_lifecycle():
    sm = UnifiedStateMachine(module_name="m")  # Offline
    sm.handle_event(E.WARN)
    sm.handle_event(E.FAULT)
    assert names(sm) == ("Offline", "Idle", "Critical")


# -- cross-layer events -------------------------------------------------------------------------


@pytest.mark.parametrize("lifecycle", LIFECYCLE_ALL)
@pytest.mark.parametrize("operational", OPERATIONAL_ALL)
def test_emergency_stop_from_every_state(lifecycle, operational):
    sm = at(lifecycle=lifecycle, operational=operational, health="Warning")
    seen = []
    for layer in ("lifecycle", "operational", "health"):
        getattr(sm, f"register_{layer}_callback")(lambda old, new, ev, layer=layer: seen.append((layer, old, new)))
    result = sm.handle_event(E.EMERGENCY_STOP)
    expected_lifecycle = "Offline" if lifecycle == "Offline" else "ShuttingDown"
    assert names(sm) == (expected_lifecycle, "Stopped", "Critical")
    assert str(result) == f"{expected_lifecycle}/Stopped/Critical"
    expected = [("health", "Warning", "Critical"), ("operational", operational, "Stopped")]
    if lifecycle != "Offline":
        expected.append(("lifecycle", lifecycle, "ShuttingDown"))
    assert seen == expected
    assert len(sm.history) == 2  # one event, all layers at once


def test_emergency_stop_callbacks_see_all_layers_already_changed():
    sm = at(lifecycle="Active", operational="Running")
    seen = []
    sm.register_health_callback(lambda old, new, ev: seen.append(names(sm)))
    sm.handle_event(E.EMERGENCY_STOP)
    assert seen == [("ShuttingDown", "Stopped", "Critical")]


def test_after_emergency_stop_work_restarts_only_after_reset_and_restart():
    sm = at(lifecycle="Active", operational="Running")
    sm.handle_event(E.EMERGENCY_STOP)
    with pytest.raises(InvalidTransitionError):
        sm.handle_event(E.SET_READY)
    for event in (E.FINISHED, E.START, E.INIT_SUCCESS, E.TASK_RESET, E.RESET, E.SET_READY, E.TASK_START):
        sm.handle_event(event)
    assert names(sm) == ("Active", "Running", "Healthy")


@pytest.mark.parametrize("operational, after", [("Running", "Paused"), ("BackgroundRunning", "Paused"),
                                                ("Idle", "Idle"), ("Ready", "Ready"), ("Paused", "Paused"),
                                                ("Stopped", "Stopped")])
@pytest.mark.parametrize("lifecycle", ["Offline", "Active", "ShuttingDown"])
def test_interrupt(operational, after, lifecycle):
    sm = at(lifecycle=lifecycle, operational=operational, health="Warning")
    calls: list[object] = []
    sm.register_operational_callback(lambda old, new, ev: calls.append((old, new)))
    sm.register_health_callback(lambda *a: calls.append("health"))
    sm.register_lifecycle_callback(lambda *a: calls.append("lifecycle"))
    sm.handle_event(E.INTERRUPT)
    assert names(sm) == (lifecycle, after, "Warning")
    assert calls == ([(operational, after)] if after != operational else [])
    assert sm.history[-1].accepted


def test_interrupted_task_resumes_to_ready():
    sm = at(lifecycle="Active", operational="Running")
    sm.handle_event(E.INTERRUPT)
    sm.handle_event(E.TASK_RESUME)
    assert sm.get_operational_state() == OperationalState.READY


@pytest.mark.parametrize("payload, expected", [
    ({"lifecycle": "Active", "operational": "Idle", "health": "Healthy"}, ("Active", "Idle", "Healthy")),
    ({"operational": "BackgroundRunning"}, ("ShuttingDown", "BackgroundRunning", "Critical")),
    ({"lifecycle": "SHUTTING_DOWN", "reason": "maintenance"}, ("ShuttingDown", "Stopped", "Critical")),
    ({"health": HealthState.WARNING}, ("ShuttingDown", "Stopped", "Warning")),
])
def test_priority_override(payload, expected):
    sm = at(lifecycle="Active", operational="Running")
    sm.handle_event(E.EMERGENCY_STOP)
    calls = []
    for layer in ("lifecycle", "operational", "health"):
        getattr(sm, f"register_{layer}_callback")(lambda old, new, ev, layer=layer: calls.append(layer))
    sm.handle_event(StateEvent(E.PRIORITY_OVERRIDE, payload=payload))
    assert names(sm) == expected
    assert calls == [layer for layer in ("health", "operational", "lifecycle") if layer in payload]


@pytest.mark.parametrize("payload, message", [
    (None, "needs a payload"),
    ({}, "needs a payload"),
    ({"reason": "x"}, "names no layer"),
    ({"operatonal": "Idle"}, "unknown keys"),
    ({"lifecycle": "Active", "operational": "Sleeping"}, "'Sleeping' is not a operational state"),
    ({"health": "Active"}, "not a health state"),
])
def test_priority_override_is_validated_whole(payload, message):
    sm = at(lifecycle="Recovering", operational="Paused", health="Warning")
    with pytest.raises(ValueError, match=message):
        sm.handle_event(StateEvent(E.PRIORITY_OVERRIDE, payload=payload))
    assert names(sm) == ("Recovering", "Paused", "Warning")
    assert not sm.history[-1].accepted


def test_status_update_changes_nothing_and_is_recorded(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    sm = at(lifecycle="Active")
    before = sm.states
    calls = []
    sm.register_health_callback(lambda *a: calls.append(a))
    assert sm.handle_event(StateEvent(E.STATUS_UPDATE, payload={"cpu": 0.4})) == before
    assert calls == [] and sm.history[-1].event.payload == {"cpu": 0.4}
    assert caplog.records[-1].getMessage() == "Handling event STATUS_UPDATE: no state change"


# -- callbacks ----------------------------------------------------------------------------------


def test_callbacks_per_layer_get_old_new_and_event():
    sm = UnifiedStateMachine(module_name="m")
    seen: dict[str, list[tuple[object, object, StateEvent]]] = {"lifecycle": [], "operational": [], "health": []}
    for layer, items in seen.items():
        getattr(sm, f"register_{layer}_callback")(lambda old, new, ev, items=items: items.append((old, new, ev)))
    start = StateEvent(E.START, payload={"by": "test"})
    sm.handle_event(start)
    sm.handle_event(E.INIT_SUCCESS)
    sm.handle_event(E.SET_READY)
    sm.handle_event(E.FAULT)
    sm.handle_event(E.FAULT)
    (old, new, ev), (old2, new2, ev2) = seen["lifecycle"]
    assert (old, new, ev) == (LifecycleState.OFFLINE, LifecycleState.INITIALIZING, start)
    assert isinstance(old, LifecycleState) and isinstance(new, LifecycleState)
    assert (old2, new2, ev2.event_type) == ("Initializing", "Active", E.INIT_SUCCESS)
    assert [(o, n, e.event_type) for o, n, e in seen["operational"]] == [("Idle", "Ready", E.SET_READY)]
    # the second FAULT is accepted and reported, Critical → Critical
    assert [(o, n, e.event_type) for o, n, e in seen["health"]] == [
        ("Healthy", "Critical", E.FAULT), ("Critical", "Critical", E.FAULT)]


def test_several_callbacks_run_in_registration_order_and_register_returns_the_callback():
    sm = UnifiedStateMachine(module_name="m")
    order = []

    @sm.register_lifecycle_callback
    def first(old, new, ev):
        order.append("first")

    sm.register_lifecycle_callback(lambda *a: order.append("second"))
    sm.handle_event(E.START)
    assert order == ["first", "second"] and callable(first)


def test_refused_event_calls_no_callback():
    sm = UnifiedStateMachine(module_name="m")
    calls = []
    sm.register_operational_callback(lambda *a: calls.append(a))
    with pytest.raises(InvalidTransitionError):
        sm.handle_event(E.TASK_START)
    assert calls == []


def test_failing_callback_is_logged_and_does_not_stop_the_machine(caplog):
    sm = UnifiedStateMachine(module_name="m")
    later = []

    def broken(old, new, ev):
        raise RuntimeError("observer bug")

    sm.register_lifecycle_callback(broken)
    sm.register_lifecycle_callback(lambda old, new, ev: later.append(new))
    snapshot = sm.handle_event(E.START)
    assert snapshot is not None and snapshot.lifecycle == LifecycleState.INITIALIZING
    assert later == ["Initializing"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "lifecycle callback" in record.getMessage() and record.exc_info[0] is RuntimeError


def test_register_refuses_non_callables():
    with pytest.raises(TypeError):
        UnifiedStateMachine(module_name="m").register_health_callback("not callable")  # type: ignore[arg-type]


# -- the queue ----------------------------------------------------------------------------------


def test_events_from_a_callback_are_queued_and_fault_jumps_two_normal_events():
    sm = at(lifecycle="Active", operational="Ready")
    results = []

    def on_operational(old, new, ev):
        if ev.event_type is E.TASK_START:
            results.append(sm.handle_event(E.SET_BACKGROUND))
            results.append(sm.handle_event(E.SET_FOREGROUND))
            results.append(sm.handle_event(StateEvent(E.FAULT, payload={"error": "disk"})))
            # nothing handled yet: queued behind the current event
            results.append((names(sm), sm.queue_depth))

    sm.register_operational_callback(on_operational)
    returned = sm.handle_event(E.TASK_START)
    assert results == [None, None, None, (("Active", "Running", "Healthy"), 3)]
    assert handled(sm) == [("TASK_START", True), ("FAULT", True), ("SET_BACKGROUND", True), ("SET_FOREGROUND", True)]
    # the call returns once the queue is empty, with the states right after its own event
    assert str(returned) == "Active/Running/Healthy"
    assert names(sm) == ("Active", "Running", "Critical")
    assert sm.queue_depth == 0


def test_priorities_high_then_normal_then_low_fifo_within_each():
    sm = at(lifecycle="Active")
    trigger = StateEvent(E.STATUS_UPDATE, payload={"n": 0})

    def on_health(old, new, ev):
        if ev.event_type is E.WARN and ev.payload == {"go": True}:
            for event in [StateEvent(E.STATUS_UPDATE, payload={"n": 1}), E.CLEAR_WARNING, E.INTERRUPT,
                          StateEvent(E.STATUS_UPDATE, payload={"n": 2}), E.WARN, E.EMERGENCY_STOP, E.FAULT]:
                sm.handle_event(event)

    sm.register_health_callback(on_health)
    sm.handle_event(trigger)
    sm.handle_event(StateEvent(E.WARN, payload={"go": True}))
    order = [(h.event.event_type.name, (h.event.payload or {}).get("n")) for h in sm.history[3:]]
    assert order == [("INTERRUPT", None), ("EMERGENCY_STOP", None), ("FAULT", None),
                     ("CLEAR_WARNING", None), ("WARN", None), ("STATUS_UPDATE", 1), ("STATUS_UPDATE", 2)]


def test_refused_queued_event_is_logged_and_recorded_without_failing_the_caller(caplog):
    sm = at(lifecycle="Active", operational="Idle")
    sm.register_operational_callback(lambda old, new, ev: sm.handle_event(E.TASK_COMPLETE)
                                     if ev.event_type is E.SET_READY else None)
    assert sm.handle_event(E.SET_READY).operational == OperationalState.READY
    assert handled(sm) == [("SET_READY", True), ("TASK_COMPLETE", False)]
    assert sm.history[-1].error == "Cannot transition from Ready to Ready with event TASK_COMPLETE"
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] == [
        ("WARNING", "Rejected event TASK_COMPLETE: Cannot transition from Ready to Ready with event TASK_COMPLETE")]


def test_priorities_of_event_types():
    high = {e for e in EventType if e.priority is EventPriority.HIGH}
    low = {e for e in EventType if e.priority is EventPriority.LOW}
    assert high == {E.EMERGENCY_STOP, E.FAULT, E.INTERRUPT}
    assert low == {E.STATUS_UPDATE}
    assert EventPriority.HIGH > EventPriority.NORMAL > EventPriority.LOW
    assert StateEvent(E.FAULT).priority is EventPriority.HIGH


def test_event_from_another_thread_waits_and_high_priority_jumps_ahead():
    sm = at(lifecycle="Active", operational="Ready")
    in_callback = threading.Event()
    release = threading.Event()
    results = {}

    def slow(old, new, ev):
        if ev.event_type is E.TASK_START:
            in_callback.set()
            assert release.wait(5)

    sm.register_operational_callback(slow)

    def send(key, event):
        results[key] = sm.handle_event(event)

    main = threading.Thread(target=send, args=("start", E.TASK_START))
    main.start()
    assert in_callback.wait(5)
    pause = threading.Thread(target=send, args=("pause", E.TASK_PAUSE))
    pause.start()
    _until(lambda: sm.queue_depth == 1)
    fault = threading.Thread(target=send, args=("fault", E.FAULT))
    fault.start()
    _until(lambda: sm.queue_depth == 2)
    assert "pause" not in results  # still waiting for its turn
    release.set()
    for t in (main, pause, fault):
        t.join(5)
    assert handled(sm) == [("TASK_START", True), ("FAULT", True), ("TASK_PAUSE", True)]
    assert str(results["fault"]) == "Active/Running/Critical"
    assert str(results["pause"]) == "Active/Paused/Critical"


def test_invalid_event_from_another_thread_raises_in_that_thread():
    sm = at(lifecycle="Active", operational="Ready")
    in_callback, release = threading.Event(), threading.Event()

    def hold(*_: object) -> None:
        in_callback.set()
        release.wait(5)

    sm.register_operational_callback(hold)
    errors = []

    def bad():
        try:
            sm.handle_event(E.TASK_RESET)
        except InvalidTransitionError as exc:
            errors.append(str(exc))

    t1 = threading.Thread(target=sm.handle_event, args=(E.TASK_START,))
    t1.start()
    assert in_callback.wait(5)
    t2 = threading.Thread(target=bad)
    t2.start()
    _until(lambda: sm.queue_depth == 1)
    release.set()
    t1.join(5)
    t2.join(5)
    assert errors == ["Cannot transition from Running to Idle with event TASK_RESET"]


def test_a_waiting_thread_takes_over_when_the_processing_thread_dies():
    sm = at(lifecycle="Active")
    in_callback, release = threading.Event(), threading.Event()

    class Stop(BaseException):
        pass

    def dies(old, new, ev):
        in_callback.set()
        release.wait(5)
        raise Stop  # not an Exception: escapes the callback guard, like KeyboardInterrupt

    sm.register_lifecycle_callback(dies)
    died = []

    def run():
        try:
            sm.handle_event(E.SHUTDOWN)
        except Stop:
            died.append(True)

    t1 = threading.Thread(target=run)
    t1.start()
    assert in_callback.wait(5)
    out = []
    t2 = threading.Thread(target=lambda: out.append(sm.handle_event(E.WARN)))
    t2.start()
    _until(lambda: sm.queue_depth == 1)
    release.set()
    t1.join(5)
    t2.join(5)
    assert died == [True] and not t2.is_alive()
    assert out[0].health == HealthState.WARNING


def test_threads_hammering_the_machine():
    sm = at(lifecycle="Active", history_limit=5000)
    counts = {"health": 0}
    sm.register_health_callback(lambda *a: counts.__setitem__("health", counts["health"] + 1))
    per_thread, threads = 200, 8
    barrier = threading.Barrier(threads)
    errors = []

    def work(i):
        barrier.wait()
        try:
            for n in range(per_thread):
                sm.handle_event(StateEvent(E.FAULT if n % 2 else E.RESET, payload={"t": i, "n": n}))
                sm.get_all_states()
        except Exception as exc:  # pragma: no cover - would fail the assertion below
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert errors == []
    assert counts["health"] == per_thread * threads
    history = sm.history[1:]
    assert len(history) == per_thread * threads and all(h.accepted for h in history)
    # each thread's own events are handled in the order it sent them
    for i in range(threads):
        assert [h.event.payload["n"] for h in history if h.event.payload["t"] == i] == list(range(per_thread))
    # each entry starts where the previous one ended: no lost or interleaved update
    assert all(a.after == b.before for a, b in itertools.pairwise(history))


def _until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


# -- async --------------------------------------------------------------------------------------


def test_handle_event_async_returns_and_raises_like_handle_event():
    sm = at(lifecycle="Active", operational="Ready")

    async def main():
        result = await sm.handle_event_async(E.TASK_START)
        with pytest.raises(InvalidTransitionError, match="from Running to Running"):
            await sm.handle_event_async(E.TASK_START)
        return result

    assert asyncio.run(main()).operational == OperationalState.RUNNING


def test_handle_event_async_does_not_block_the_loop_while_another_thread_processes():
    sm = at(lifecycle="Active", operational="Ready")
    in_callback, release = threading.Event(), threading.Event()

    def hold(*_: object) -> None:
        in_callback.set()
        release.wait(5)

    sm.register_operational_callback(hold)
    worker = threading.Thread(target=sm.handle_event, args=(E.TASK_START,))
    worker.start()
    assert in_callback.wait(5)

    async def main():
        task = asyncio.create_task(sm.handle_event_async(E.FAULT))
        ticks = 0
        while sm.queue_depth == 0 and ticks < 5000:
            await asyncio.sleep(0.001)
            ticks += 1
        await asyncio.sleep(0.02)
        assert not task.done()  # waiting for the worker, while this loop keeps running
        release.set()
        return await task

    result = asyncio.run(main())
    worker.join(5)
    assert str(result) == "Active/Running/Critical"


def test_handle_event_async_refuses_strings():
    sm = UnifiedStateMachine(module_name="m")
    with pytest.raises(TypeError):
        asyncio.run(sm.handle_event_async("start"))  # type: ignore[arg-type]  # the refusal is under test


# -- logging ------------------------------------------------------------------------------------


def test_logging_one_info_line_per_layer_moved(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    sm = at(lifecycle="Active", operational="Ready")
    caplog.clear()
    sm.handle_event(E.TASK_START)
    sm.handle_event(E.EMERGENCY_STOP)
    sm.handle_event(E.INTERRUPT)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "Handling event TASK_START: Ready → Running"),
        ("INFO", "Handling event EMERGENCY_STOP: Healthy → Critical"),
        ("INFO", "Handling event EMERGENCY_STOP: Running → Stopped"),
        ("INFO", "Handling event EMERGENCY_STOP: Active → ShuttingDown"),
        ("INFO", "Handling event INTERRUPT: no state change"),
    ]
    record = caplog.records[0]
    assert (record.module_name, record.layer) == ("test_module", "operational")
    assert record.event_id == sm.history[-3].event.event_id


def test_logging_refusals_at_warning(caplog):
    sm = UnifiedStateMachine(module_name="m")
    with pytest.raises(InvalidTransitionError):
        sm.handle_event(E.FINISHED)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "Rejected event FINISHED: Cannot transition from Offline to Offline with event FINISHED")]


# -- inputs and events ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["task_start", "TASK_START", 3, None, coordinator.EventType.STATE_CHANGED])
def test_handle_event_refuses_anything_but_event_type_or_state_event(bad):
    sm = at(lifecycle="Active", operational="Ready")
    with pytest.raises(TypeError, match="EventType or a StateEvent"):
        sm.handle_event(bad)
    assert names(sm) == ("Active", "Ready", "Healthy") and len(sm.history) == 1


def test_state_event_defaults():
    before = datetime.now(UTC)
    a, b = StateEvent(event_type=E.TASK_START), StateEvent(E.TASK_START)
    offset = a.timestamp.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    assert before <= a.timestamp <= datetime.now(UTC)
    assert re.fullmatch(r"evt_[0-9a-f]{12}", a.event_id) and a.event_id != b.event_id
    assert (a.origin_layer, a.payload) == (None, None)


def test_state_event_is_immutable_and_its_payload_read_only():
    # Every mutation below is a type error too: the run-time refusal is what is under test.
    original: dict[str, Any] = {"task_id": "task_123", "parameters": {"speed": 100}, "tags": ["a"]}
    event = StateEvent(event_type=E.TASK_START, origin_layer="operational", payload=original)
    with pytest.raises(FrozenInstanceError):
        event.event_type = E.TASK_STOP  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        event.payload["task_id"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        event.payload["parameters"]["speed"] = 1  # type: ignore[index]
    for mutate in (lambda p: p.update(x=1), lambda p: p.pop("task_id"), lambda p: p.clear(),
                   lambda p: p.setdefault("x", 1), lambda p: p.popitem(), lambda p: p.__delitem__("task_id")):
        with pytest.raises(TypeError):
            mutate(event.payload)
    original["task_id"] = "changed"
    original["parameters"]["speed"] = 1
    assert event.payload == {"task_id": "task_123", "parameters": {"speed": 100}, "tags": ["a"]}
    assert repr(event.payload) == "{'task_id': 'task_123', 'parameters': {'speed': 100}, 'tags': ['a']}"
    # copies and pickles stay read-only and equal
    for clone in (copy.deepcopy(event.payload), pickle.loads(pickle.dumps(event.payload)), copy.copy(event.payload)):
        assert clone == event.payload
        with pytest.raises(TypeError):
            clone["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize("kwargs, error", [
    ({"event_type": "task_start"}, TypeError),
    ({"event_type": E.START, "timestamp": datetime(2025, 1, 1)}, ValueError),
    ({"event_type": E.START, "origin_layer": "database"}, ValueError),
    ({"event_type": E.START, "payload": ["not", "a", "mapping"]}, TypeError),
    ({"event_type": E.START, "event_id": ""}, ValueError),
])
def test_state_event_validation(kwargs, error):
    with pytest.raises(error):
        StateEvent(**kwargs)


def test_event_layers():
    assert {e.layer for e in EventType} == {"lifecycle", "operational", "health", None}
    assert [e.name for e in EventType if e.layer is None] == [
        "INTERRUPT", "EMERGENCY_STOP", "PRIORITY_OVERRIDE", "STATUS_UPDATE"]


# -- reading ------------------------------------------------------------------------------------


def test_initial_states_and_snapshot():
    sm = UnifiedStateMachine(module_name="my_module")
    assert (sm.get_lifecycle_state(), sm.get_operational_state(), sm.get_health_state()) == (
        LifecycleState.OFFLINE, OperationalState.IDLE, HealthState.HEALTHY)
    assert sm.get_all_states() == {"lifecycle": "Offline", "operational": "Idle", "health": "Healthy"}
    assert sm.states == StateSnapshot() and sm.history == [] and sm.queue_depth == 0
    assert repr(sm) == "<UnifiedStateMachine my_module Offline/Idle/Healthy>"


def test_history_is_bounded_and_records_before_after():
    sm = UnifiedStateMachine(module_name="m", history_limit=3)
    for event in (E.START, E.INIT_SUCCESS, E.SET_READY, E.TASK_START):
        sm.handle_event(event)
    assert [h.event.event_type for h in sm.history] == [E.INIT_SUCCESS, E.SET_READY, E.TASK_START]
    last = sm.history[-1]
    assert (str(last.before), str(last.after)) == ("Active/Ready/Healthy", "Active/Running/Healthy")
    assert last.handled_at.tzinfo is not None


def test_module_name_required():
    with pytest.raises(ValueError):
        UnifiedStateMachine(module_name="")


def test_top_level_exports_only_the_machine():
    assert coordinator.UnifiedStateMachine is UnifiedStateMachine
    assert coordinator.EventType is not EventType  # the event bus's, unchanged
