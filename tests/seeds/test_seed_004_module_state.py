"""Every example of seed 004 (Event System of the module state machine), as written there
with ``vyra_base`` replaced by ``coordinator``, and with the machine in the state each
example assumes."""

import asyncio
import dataclasses
import logging
from datetime import datetime

import pytest

from coordinator.state import UnifiedStateMachine
from coordinator.state.state_events import EventType, StateEvent
from coordinator.state.state_types import HealthState, InvalidTransitionError, LifecycleState, OperationalState


def active(*events):
    """A machine after START and INIT_SUCCESS (Active / Idle / Healthy), then ``events``."""
    sm = UnifiedStateMachine(module_name="my_module")
    for event in (EventType.START, EventType.INIT_SUCCESS, *events):
        sm.handle_event(event)
    return sm


def states(sm):
    return (str(sm.get_lifecycle_state()), str(sm.get_operational_state()), str(sm.get_health_state()))


def test_event_structure():
    from coordinator.state.state_events import StateEvent

    fields = dataclasses.fields(StateEvent)
    assert [f.name for f in fields] == ["event_type", "timestamp", "origin_layer", "payload", "event_id"]
    event = StateEvent(event_type=EventType.START)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.origin_layer = "health"  # type: ignore[misc]  # the immutability is under test
    assert isinstance(event.timestamp, datetime) and event.timestamp.tzinfo is not None
    assert event.event_id.startswith("evt_")


def test_event_example():
    from coordinator.state.state_events import EventType, StateEvent

    state_machine = active(EventType.SET_READY)

    event = StateEvent(
        event_type=EventType.TASK_START,
        origin_layer="operational",
        payload={"task_id": "task_123", "priority": "high"}
    )

    # Handle the event
    state_machine.handle_event(event)

    assert state_machine.get_operational_state() == OperationalState.RUNNING
    assert state_machine.history[-1].event is event


def test_basic_usage():
    from coordinator.state import UnifiedStateMachine
    from coordinator.state.state_events import EventType

    # Create state machine
    state_machine = UnifiedStateMachine(module_name="my_module")

    # Handle events using EventType
    state_machine.handle_event(EventType.START)
    state_machine.handle_event(EventType.INIT_SUCCESS)
    state_machine.handle_event(EventType.SET_READY)

    assert states(state_machine) == ("Active", "Ready", "Healthy")
    assert state_machine.get_all_states() == {"lifecycle": "Active", "operational": "Ready", "health": "Healthy"}


def test_with_payload():
    from coordinator.state.state_events import EventType, StateEvent

    state_machine = active(EventType.SET_READY)
    seen = []
    state_machine.register_operational_callback(lambda old, new, event: seen.append(event.payload))

    # Create event with payload
    event = StateEvent(
        event_type=EventType.TASK_START,
        origin_layer="operational",
        payload={
            "task_id": "task_123",
            "priority": "high",
            "parameters": {"speed": 100}
        }
    )

    # Handle the event
    state_machine.handle_event(event)

    assert seen == [{"task_id": "task_123", "priority": "high", "parameters": {"speed": 100}}]


def test_event_callbacks(capsys):
    state_machine = UnifiedStateMachine(module_name="my_module")

    def on_lifecycle_event(old_state, new_state, event):
        print(f"Lifecycle: {old_state} → {new_state}")
        print(f"Event: {event.event_type}")
        if event.payload:
            print(f"Payload: {event.payload}")

    def on_operational_event(old_state, new_state, event):
        print(f"Operational: {old_state} → {new_state}")

    def on_health_event(old_state, new_state, event):
        print(f"Health: {old_state} → {new_state}")

    # Register callbacks
    state_machine.register_lifecycle_callback(on_lifecycle_event)
    state_machine.register_operational_callback(on_operational_event)
    state_machine.register_health_callback(on_health_event)

    state_machine.handle_event(StateEvent(event_type=EventType.START, payload={"by": "operator"}))
    state_machine.handle_event(EventType.INIT_SUCCESS)
    state_machine.handle_event(EventType.SET_READY)
    state_machine.handle_event(EventType.WARN)
    assert capsys.readouterr().out == (
        "Lifecycle: Offline → Initializing\n"
        "Event: EventType.START\n"
        "Payload: {'by': 'operator'}\n"
        "Lifecycle: Initializing → Active\n"
        "Event: EventType.INIT_SUCCESS\n"
        "Operational: Idle → Ready\n"
        "Health: Healthy → Warning\n"
    )


def test_invalid_events(capsys):
    state_machine = active()

    from coordinator.state.state_types import InvalidTransitionError

    try:
        # Try to start task when not ready
        state_machine.handle_event(EventType.TASK_START)
    except InvalidTransitionError as e:
        print(f"Invalid event: {e}")
        # Output: "Cannot transition from Idle to Running with event TASK_START"

    assert capsys.readouterr().out == "Invalid event: Cannot transition from Idle to Running with event TASK_START\n"
    assert states(state_machine) == ("Active", "Idle", "Healthy")


def test_invalid_event_on_a_fresh_machine():
    state_machine = UnifiedStateMachine(module_name="my_module")
    with pytest.raises(InvalidTransitionError) as excinfo:
        state_machine.handle_event(EventType.TASK_START)
    assert str(excinfo.value) == "Cannot transition from Idle to Running with event TASK_START"


def test_event_sequence_validation():
    state_machine = UnifiedStateMachine(module_name="my_module")

    # ✅ Valid sequence
    state_machine.handle_event(EventType.START)         # Offline → Initializing
    assert state_machine.get_lifecycle_state() == LifecycleState.INITIALIZING
    state_machine.handle_event(EventType.INIT_SUCCESS)  # Initializing → Active
    assert state_machine.get_lifecycle_state() == LifecycleState.ACTIVE
    state_machine.handle_event(EventType.SET_READY)     # Idle → Ready
    assert state_machine.get_operational_state() == OperationalState.READY
    state_machine.handle_event(EventType.TASK_START)    # Ready → Running
    assert state_machine.get_operational_state() == OperationalState.RUNNING

    # ❌ Invalid sequence
    message = "^Cannot transition from Running to Running with event TASK_START$"
    with pytest.raises(InvalidTransitionError, match=message):
        state_machine.handle_event(EventType.TASK_START)    # Error: Not in Ready state


def test_event_queue():
    state_machine = active()

    # Events are queued and processed in order
    state_machine.handle_event(EventType.SET_READY)
    state_machine.handle_event(EventType.TASK_START)
    state_machine.handle_event(EventType.TASK_COMPLETE)

    # High priority events jump the queue
    state_machine.handle_event(EventType.EMERGENCY_STOP)  # Processed immediately

    assert [h.event.event_type for h in state_machine.history[2:]] == [
        EventType.SET_READY, EventType.TASK_START, EventType.TASK_COMPLETE, EventType.EMERGENCY_STOP
    ]
    assert states(state_machine) == ("ShuttingDown", "Stopped", "Critical")


def test_event_queue_high_priority_jumps_queued_events():
    # what "jump the queue" means once events are waiting: handed in from a callback
    state_machine = active()
    order = []

    def on_operational(old, new, event):
        order.append(event.event_type.name)
        if event.event_type is EventType.SET_READY:
            state_machine.handle_event(EventType.TASK_START)
            state_machine.handle_event(EventType.TASK_COMPLETE)
            state_machine.handle_event(EventType.EMERGENCY_STOP)

    state_machine.register_operational_callback(on_operational)
    state_machine.handle_event(EventType.SET_READY)
    # EMERGENCY_STOP ran before the two queued normal events, which were then refused
    assert order == ["SET_READY", "EMERGENCY_STOP"]
    assert [(h.event.event_type.name, h.accepted) for h in state_machine.history[3:]] == [
        ("EMERGENCY_STOP", True), ("TASK_START", False), ("TASK_COMPLETE", False)
    ]


def test_async_event_handling():
    state_machine = active(EventType.SET_READY)
    during = []

    async def task_execution():
        during.append(state_machine.get_operational_state())
        await asyncio.sleep(0)

    async def handle_events_async():
        # Handle event asynchronously
        await state_machine.handle_event_async(EventType.TASK_START)

        # Wait for task completion
        await task_execution()

        await state_machine.handle_event_async(EventType.TASK_COMPLETE)

    asyncio.run(handle_events_async())
    assert during == [OperationalState.RUNNING]
    assert state_machine.get_operational_state() == OperationalState.READY


@pytest.mark.parametrize("fails", [False, True])
def test_task_execution_pattern(fails):
    state_machine = active()

    def execute_task():
        if fails:
            raise RuntimeError("boom")

    # Standard task execution pattern
    state_machine.handle_event(EventType.SET_READY)
    state_machine.handle_event(EventType.TASK_START)

    try:
        # Execute task
        execute_task()
        state_machine.handle_event(EventType.TASK_COMPLETE)
    except Exception as e:
        # Handle error
        state_machine.handle_event(EventType.TASK_STOP)
        state_machine.handle_event(StateEvent(event_type=EventType.FAULT, payload={"error": str(e)}))

    assert states(state_machine) == (("Active", "Stopped", "Critical") if fails else ("Active", "Ready", "Healthy"))


@pytest.mark.parametrize("recovers", [True, False])
def test_error_recovery_pattern(recovers):
    state_machine = active()

    def perform_recovery():
        if not recovers:
            raise RuntimeError("still broken")

    # Error recovery pattern
    def handle_error():
        # Detect error
        state_machine.handle_event(EventType.FAULT_DETECTED)
        assert state_machine.get_lifecycle_state() == LifecycleState.RECOVERING

        # Attempt recovery
        try:
            perform_recovery()
            state_machine.handle_event(EventType.RECOVERY_SUCCESS)
        except Exception:
            state_machine.handle_event(EventType.RECOVERY_FAILED)

    handle_error()
    assert state_machine.get_lifecycle_state() == (LifecycleState.ACTIVE if recovers else LifecycleState.SHUTTING_DOWN)


@pytest.mark.parametrize("running", [True, False])
def test_graceful_shutdown_pattern(running):
    state_machine = active(EventType.SET_READY, *([EventType.TASK_START] if running else []))
    cleaned = []

    def cleanup_resources():
        cleaned.append(state_machine.get_lifecycle_state())

    # Graceful shutdown pattern
    def shutdown():
        # Stop current tasks
        if state_machine.get_operational_state() == OperationalState.RUNNING:
            state_machine.handle_event(EventType.TASK_STOP)

        # Initiate shutdown
        state_machine.handle_event(EventType.SHUTDOWN)

        # Cleanup
        cleanup_resources()

        # Finish shutdown
        state_machine.handle_event(EventType.FINISHED)

    shutdown()
    assert cleaned == [LifecycleState.SHUTTING_DOWN]
    assert states(state_machine) == ("Offline", "Stopped" if running else "Ready", "Healthy")


def test_event_logging(caplog):
    state_machine = active(EventType.SET_READY)

    import logging

    # Configure logging
    logging.basicConfig(level=logging.INFO)
    caplog.set_level(logging.INFO, logger="coordinator.state")

    # Events will be logged automatically
    state_machine.handle_event(EventType.TASK_START)
    # Output: INFO: Handling event TASK_START: Ready → Running

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "Handling event TASK_START: Ready → Running")
    ]


def test_custom_event_logging(caplog):
    state_machine = UnifiedStateMachine(module_name="my_module")
    caplog.set_level(logging.INFO)

    def log_event(old_state, new_state, event):
        logging.info(
            f"State change: {old_state} → {new_state}",
            extra={
                "event_type": event.event_type,
                "event_id": event.event_id,
                "timestamp": event.timestamp,
                "payload": event.payload
            }
        )

    state_machine.register_lifecycle_callback(log_event)

    event = StateEvent(event_type=EventType.START, payload={"by": "operator"})
    state_machine.handle_event(event)
    [record] = [r for r in caplog.records if r.name == "root"]
    assert record.getMessage() == "State change: Offline → Initializing"
    assert (record.event_type, record.event_id, record.timestamp, record.payload) == (
        EventType.START, event.event_id, event.timestamp, {"by": "operator"}
    )


def test_best_practice_always_use_event_type_enum():
    state_machine = active(EventType.SET_READY)

    # ❌ Don't use strings:
    with pytest.raises(TypeError, match=r"use EventType\.TASK_START"):
        state_machine.handle_event("task_start")  # Wrong
    assert state_machine.get_operational_state() == OperationalState.READY

    # ✅ Use EventType:
    state_machine.handle_event(EventType.TASK_START)  # Correct
    assert state_machine.get_operational_state() == OperationalState.RUNNING


def test_best_practice_handle_exceptions(caplog):
    state_machine = UnifiedStateMachine(module_name="my_module")
    logger = logging.getLogger("my_module")

    try:
        state_machine.handle_event(EventType.TASK_START)
    except InvalidTransitionError as e:
        logger.error(f"Transition failed: {e}")

    assert "Transition failed: Cannot transition from Idle to Running with event TASK_START" in [
        r.getMessage() for r in caplog.records if r.name == "my_module"
    ]


def test_best_practice_use_payload_for_context():
    state_machine = active()
    exception = ConnectionError("database unreachable")

    event = StateEvent(
        event_type=EventType.FAULT,
        payload={"error": str(exception), "component": "database"}
    )
    state_machine.handle_event(event)

    assert state_machine.get_health_state() == HealthState.CRITICAL
    assert state_machine.history[-1].event.payload == {"error": "database unreachable", "component": "database"}


def test_best_practice_register_callbacks_for_monitoring():
    state_machine = UnifiedStateMachine(module_name="my_module")
    seen = []

    def monitor_lifecycle(old, new, event):
        seen.append(("lifecycle", old, new))

    def monitor_operations(old, new, event):
        seen.append(("operational", old, new))

    def monitor_health(old, new, event):
        seen.append(("health", old, new))

    state_machine.register_lifecycle_callback(monitor_lifecycle)
    state_machine.register_operational_callback(monitor_operations)
    state_machine.register_health_callback(monitor_health)

    for event in (EventType.START, EventType.INIT_SUCCESS, EventType.SET_READY, EventType.WARN):
        state_machine.handle_event(event)
    assert seen == [
        ("lifecycle", "Offline", "Initializing"),
        ("lifecycle", "Initializing", "Active"),
        ("operational", "Idle", "Ready"),
        ("health", "Healthy", "Warning"),
    ]


@pytest.mark.parametrize("critical", [True, False])
def test_best_practice_emergency_stop(critical):
    state_machine = active(EventType.SET_READY, EventType.TASK_START)

    def critical_error_detected():
        return critical

    if critical_error_detected():
        state_machine.handle_event(EventType.EMERGENCY_STOP)

    assert states(state_machine) == (
        ("ShuttingDown", "Stopped", "Critical") if critical else ("Active", "Running", "Healthy")
    )
