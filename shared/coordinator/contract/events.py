"""The payload of every event, one pydantic model per ``EventType``.

Emitters build these models and readers read their attributes; the same models validate an
event decoded from the wire (``coordinator.contract.codec.decode_event``) and generate its
JSON Schema (``coordinator.contract.schema``).

    >>> StateChanged(asset_id="ast_1", from_state="IDLE", to_state="CHARGING", trigger="charge").to_state
    'CHARGING'
    >>> payload_model(EventType.COMMAND_FAILED).__name__
    'CommandFailed'

A payload also reads like the mapping it used to be (``event.payload["to_state"]`` as the
seed documents do, ``.get``, ``dict(event.payload)``, ``payload == {...}``); new code reads
attributes, which a type checker can follow.

Decoding is strict: numbers are not bools, datetimes are msgpack Timestamps (never text),
fields are not unknown. Only enum fields accept their values as text, the form they travel in.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, Strict, model_validator

from coordinator.base import Command, CommandStatus, CommandType, ParameterValue


class EventType(StrEnum):
    # the seed's eight
    COMMAND_CREATED = "COMMAND_CREATED"
    COMMAND_DISPATCHED = "COMMAND_DISPATCHED"
    COMMAND_ACKNOWLEDGED = "COMMAND_ACKNOWLEDGED"
    COMMAND_COMPLETED = "COMMAND_COMPLETED"
    COMMAND_FAILED = "COMMAND_FAILED"
    COMMAND_TIMED_OUT = "COMMAND_TIMED_OUT"
    STATE_CHANGED = "STATE_CHANGED"
    SCHEDULE_RECEIVED = "SCHEDULE_RECEIVED"
    # what the lifecycle needs beyond them
    COMMAND_RETRY_SCHEDULED = "COMMAND_RETRY_SCHEDULED"
    COMMAND_CANCELLED = "COMMAND_CANCELLED"
    COMMAND_HELD = "COMMAND_HELD"
    SCHEDULE_REJECTED = "SCHEDULE_REJECTED"
    SCHEDULE_PLANNED = "SCHEDULE_PLANNED"
    """The planner recorded a schedule's commands in its ledger: they will fall due."""
    # from gateways, about devices
    SETPOINT_CLAMPED = "SETPOINT_CLAMPED"
    SETPOINT_NOT_FOLLOWED = "SETPOINT_NOT_FOLLOWED"
    """A charger's meter showed more than the limit it had proven in force (docs/ocpp.md)."""
    DEVICE_LINK_DOWN = "DEVICE_LINK_DOWN"
    DEVICE_LINK_UP = "DEVICE_LINK_UP"
    ASSET_SAFE_STATE = "ASSET_SAFE_STATE"
    """A gateway put an asset into its safe state (emergency stop), or says why it could not."""
    # the site and its processes
    EMERGENCY_STOP_ACTIVATED = "EMERGENCY_STOP_ACTIVATED"
    EMERGENCY_STOP_RESET = "EMERGENCY_STOP_RESET"
    SERVICE_STATE_CHANGED = "SERVICE_STATE_CHANGED"
    """A process's lifecycle, operational or health state moved (coordinator.state)."""
    PUBLISH_FAILED = "PUBLISH_FAILED"
    """A process could not send a message (or, summarised, several): nothing on the bus is lost quietly."""
    MESSAGE_REFUSED = "MESSAGE_REFUSED"
    """A process refused a message (or one item of a batch) it received: nothing of it was applied."""
    # operators and limits (issue 13)
    OPERATOR_COMMAND_ACCEPTED = "OPERATOR_COMMAND_ACCEPTED"
    """The planner took an operator's command: it is a command of the ledger now (``command_id``)."""
    OPERATOR_COMMAND_REJECTED = "OPERATOR_COMMAND_REJECTED"
    """The planner refused an operator's command (unknown asset, wrong kind, out of range)."""
    SETPOINT_CAPPED = "SETPOINT_CAPPED"
    """The planner sent less than the schedule asked: an operator's power limit or the site's limit."""


Time = AwareDatetime
# Free text (reasons, errors) has no length limit of its own: it often quotes untrusted input,
# and an emitter must never fail on it. The message size limit (codec) bounds it on receipt.
Text = str
Id = Annotated[str, Field(min_length=1, max_length=128)]
Word = Annotated[str, Field(min_length=1)]
"""A non-empty name: a state, a trigger, a reason code."""
# Enums travel as their values: the one place strict decoding accepts text for a type.
CommandTypeField = Annotated[CommandType, Strict(False)]
CommandStatusField = Annotated[CommandStatus, Strict(False)]


class PayloadModel(BaseModel):
    """Immutable, no unknown fields, strict types; reads like a mapping too."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, use_attribute_docstrings=True)

    def __getitem__(self, name: str) -> Any:
        """Mapping-style read, for code written against dict payloads (the seed documents)."""
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in type(self).model_fields

    def keys(self) -> list[str]:
        return list(type(self).model_fields)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if name in type(self).model_fields else default

    def __eq__(self, other: object) -> bool:
        # Equal to the dict of its fields too, so that ``payload == {...}`` keeps its meaning.
        if isinstance(other, Mapping):
            return dict(self) == dict(other)
        return super().__eq__(other)

    __hash__ = BaseModel.__hash__


class EventPayload(PayloadModel):
    """Base of every event payload."""

    @property
    def about_asset(self) -> str | None:
        """The asset the event is about (its topic's last level), None for site-wide events."""
        return None


class AssetPayload(EventPayload):
    """A payload about one asset."""

    asset_id: Id
    """The asset it is about; also the last level of its topic."""

    @property
    def about_asset(self) -> str | None:
        return self.asset_id


# -------------------------------------------------------------------------------- commands


class CommandPayload(AssetPayload):
    """Every COMMAND_* event: the command as it is after the change the event reports."""

    command_id: Id
    command_type: CommandTypeField
    parameters: dict[str, ParameterValue]
    """What the command sets, e.g. {"power_kw": 22.0}."""
    scheduled_at: Time
    """The start of its slot."""
    status: CommandStatusField
    """The status the command moved into (COMMAND_HELD: still PENDING)."""
    attempts: Annotated[int, Field(ge=0)]
    """Dispatches so far, this one included."""
    schedule_id: Id | None
    """The schedule it came from; None for a command added by hand."""
    error: Text | None
    """Why the last attempt failed or the command ended, else None."""
    dispatched_at: Time | None = None
    """When the current (last) attempt went out; None before the first dispatch."""

    @classmethod
    def of(cls, cmd: Command, **extra: Any) -> Self:
        """The payload for ``cmd`` now, plus this event type's own fields."""
        return cls(
            command_id=cmd.command_id, asset_id=cmd.asset_id, command_type=cmd.command_type,
            parameters=dict(cmd.parameters), scheduled_at=cmd.scheduled_at, status=cmd.status,
            attempts=cmd.attempts, schedule_id=cmd.schedule_id, error=cmd.error,
            dispatched_at=cmd.dispatched_at, **extra,
        )


class CommandCreated(CommandPayload):
    """A command was queued (from a schedule, or added by hand)."""


class CommandDispatched(CommandPayload):
    """An attempt went to the asset's gateway."""

    protocol: Annotated[str, Field(min_length=1, max_length=64)]
    """The gateway's protocol: ocpp, modbus, loopback."""
    gateway_id: Id
    """The gateway it went to (qubit/commands/{gateway_id})."""


class CommandAcknowledged(CommandPayload):
    """The device accepted the command; completion follows."""


class CommandCompleted(CommandPayload):
    """The device did it."""


class CommandFailed(CommandPayload):
    """Final: refused, or failed with no attempts left; ``error`` says why."""


class CommandTimedOut(CommandPayload):
    """Final: the last attempt got no answer within the command's timeout."""


class CommandCancelled(CommandPayload):
    """Final: withdrawn before it ran (superseded, early departure, an operator)."""


class CommandRetryScheduled(CommandPayload):
    """An attempt failed or timed out and another is due at ``retry_at``."""

    timed_out: bool
    """True when the attempt got no answer, False when it failed."""
    retry_at: Time
    """When the next attempt may go out."""


class CommandHeld(CommandPayload):
    """A due command waits, once per command: its asset is faulted/unavailable or the site is stopped."""

    asset_state: str | None
    """The asset's state machine state, None when nothing is known of it."""
    site_hold: Text | None = None
    """Why the whole site holds (the emergency stop), None for an asset-level hold."""


# ------------------------------------------------------------------------ assets, devices


class StateChanged(AssetPayload):
    """An asset's state machine moved."""

    from_state: Word
    to_state: Word
    trigger: Word
    """The machine's trigger that moved it (plug_in, charge, fault, ...)."""


class SetpointClamped(AssetPayload):
    """A gateway sent less than the command asked for: the device's limit is lower."""

    command_id: Id
    command_type: CommandTypeField
    requested: float
    """What the command asked for (kW)."""
    applied: float
    """What was written to the device (kW)."""
    limit: float
    """The limit that applied (kW): the device's, or the asset's max_power_kw."""


class SetpointNotFollowed(AssetPayload):
    """A charger's meter showed more power than the limit its composite schedule had proven in
    force, within the check window after the proof: the charger says one thing, does another."""

    command_id: Id
    """The setpoint that was proven."""
    limit_kw: float
    """The limit in force (kW)."""
    measured_kw: float
    """The active power the meter showed (kW)."""
    tolerance_kw: float
    """How far above the limit counts (the charger's verify_tolerance_kw)."""


class DeviceLink(AssetPayload):
    endpoint: Annotated[str, Field(min_length=1, max_length=256)]
    """Where the device is reached: host:port (Modbus), the charge point id (OCPP)."""
    reason: Text
    """Why the link changed; empty when there is nothing to add."""


class DeviceLinkUp(DeviceLink):
    """A gateway reaches the device (again)."""


class DeviceLinkDown(DeviceLink):
    """A gateway lost the device."""


class AssetSafeState(AssetPayload):
    """After an emergency stop: the asset is in its safe state (``detail``: what was done),
    or it is NOT (``error``: why)."""

    safe: bool
    detail: Text | None = None
    """When safe: what the device confirmed."""
    error: Text | None = None
    """When not safe: why not."""

    @model_validator(mode="after")
    def _says_why(self) -> AssetSafeState:
        if self.safe and self.detail is None:
            raise ValueError("a safe asset says what was done (detail)")
        if not self.safe and self.error is None:
            raise ValueError("an asset that is not safe says why (error)")
        return self


# ------------------------------------------------------------------------------ schedules


class ScheduleReceived(EventPayload):
    """A schedule was accepted: by the ingester (with ``version``) or by a library engine."""

    schedule_id: Id | None
    """None only from a library engine given a schedule without an id."""
    site_id: Id
    command_count: Annotated[int, Field(ge=0)]
    """Commands the schedule makes."""
    asset_count: Annotated[int, Field(ge=0)]
    """Assets those commands are for."""
    slot_count: Annotated[int, Field(ge=0)]
    """Rows of the schedule."""
    starts_at: Time | None
    """The first slot; None for a schedule with no rows."""
    ends_at: Time | None
    """The END of the last slot: its start plus the schedule's slot length (the smallest step
    between two slot starts); for a one-row schedule, its start. None for no rows."""
    version: Annotated[int, Field(ge=0)] | None = None
    """The ingester's version stamp; None from a library engine (which has none)."""


class SchedulePlanned(EventPayload):
    """The planner took a schedule over, durably: its commands are in the ledger and fall due
    by slot. A schedule's commands are announced here together; each command's own events
    start when it falls due (COMMAND_DISPATCHED, ...), and ``qubit status`` shows any of them.
    The commands of older schedules it replaced before they fell due end CANCELLED, counted
    in ``superseded``."""

    schedule_id: Id
    version: Annotated[int, Field(ge=0)]
    """The ingester's version stamp."""
    site_id: Id
    command_count: Annotated[int, Field(ge=0)]
    """Commands the schedule makes."""
    asset_count: Annotated[int, Field(ge=0)]
    """Assets those commands are for."""
    superseded: Annotated[int, Field(ge=0)]
    """Commands of older schedules, not yet due, cancelled because this one replaces them."""
    first_due_at: Time | None
    """When its first command falls due; None for a schedule that makes no command."""


class ScheduleRejected(EventPayload):
    """A schedule was refused whole, nothing of it acts.

    One model for every emitter: the ingester (every check, docs/wire-contract.md lists the
    ``reason`` codes), the planner (``malformed`` accepted message, ``stale_version``) and the
    engine (``coordinator.schedule.ScheduleError`` reasons).
    """

    schedule_id: Id | None
    """None when no id could be read from the message."""
    reason: Word
    """A short machine-readable code: too_large, not_msgpack, malformed, wrong_site, ..."""
    message: Text
    """The same for a human."""
    site_id: Id
    """The site of the process that refused it."""
    columns: list[str] = Field(default_factory=list)
    """The offending columns, when the reason is about columns."""


# ------------------------------------------------------------------ the site, the processes


class EmergencyStopPayload(EventPayload):
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    """The operator's reason."""
    issued_by: Annotated[str, Field(min_length=1, max_length=128)]
    """Who ordered it."""
    ordered_at: Time
    """When the operator ordered it (EmergencyStop.at)."""


class EmergencyStopActivated(EmergencyStopPayload):
    """The planner holds every dispatch: the site's emergency stop."""


class EmergencyStopReset(EmergencyStopPayload):
    """The explicit reset: dispatching resumes."""


class ServiceStates(PayloadModel):
    """A process's three module states (coordinator.state), by their values."""

    lifecycle: str
    operational: str
    health: str


class ServiceStateChanged(EventPayload):
    """A process's lifecycle, operational or health state (or the reasons) changed."""

    service: Id
    """The process's name (qubit/services/{service}/status)."""
    lifecycle: str
    """Offline, Initializing, Active, Recovering, ShuttingDown."""
    operational: str
    """Idle, Ready, Running, BackgroundRunning, Paused, Stopped."""
    health: str
    """Healthy, Warning, Critical."""
    reasons: list[str]
    """Why health is not Healthy."""
    emergency_stop: bool
    """True while the site's emergency stop holds."""
    previous: ServiceStates
    """The three states before the change."""


class PublishFailureReason(StrEnum):
    TOO_LARGE = "too_large"
    """Over the topic's size limit (runtime/settings.py max_message_bytes; schedules:
    codec.MAX_SCHEDULE_BYTES); never handed to the broker."""
    QOS0_OFFLINE = "qos0_offline"
    """QoS 0 (telemetry) while the broker link was down: lossy by contract, counted."""
    REFUSED = "refused"
    """The MQTT client library refused the message for another reason (``detail`` says which)."""


class PublishFailed(EventPayload):
    """Messages a process could not send. One event per message, except ``qos0_offline``:
    one event per broker outage, sent once the link is back, summarising what was dropped."""

    topic: str
    """The message's topic; for a summary, the first message dropped."""
    reason: Annotated[PublishFailureReason, Strict(False)]
    message_bytes: Annotated[int, Field(ge=0)]
    """The message's payload size; for a summary, all of them together."""
    count: Annotated[int, Field(ge=1)] = 1
    """How many messages this event is about."""
    limit_bytes: Annotated[int, Field(ge=0)] | None = None
    """The limit the message broke (``too_large``)."""
    detail: Text = ""
    """For a human: the client library's error, the outage's length."""


class RefusalReason(StrEnum):
    """Why a received message (or one item of a batch) was refused: MESSAGE_REFUSED's ``reason``
    and the ``reason`` label of ``qubit_messages_refused_total``."""

    UNREADABLE = "unreadable"
    """Not msgpack, or not the message the topic carries (a field missing, a wrong type)."""
    TOO_LARGE = "too_large"
    """Over the topic's size limit (runtime/settings.py max_message_bytes)."""
    MALFORMED_ITEM = "malformed_item"
    """One item of a batch could not be read (the rest of the batch was taken)."""
    WRONG_SITE = "wrong_site"
    """About another site (an accepted schedule with another site_id)."""
    UNKNOWN_ASSET = "unknown_asset"
    """Names an asset the site config does not have."""
    OUT_OF_RANGE = "out_of_range"
    """A value outside the asset's limits (NaN, infinite, above max_power_kw, negative for a charger)."""
    NOT_YOURS = "not_yours"
    """From, or for, the wrong gateway: a batch for another gateway, a result about a command routed
    elsewhere, a status report about an asset of another gateway."""
    STALE_VERSION = "stale_version"
    """An accepted schedule older than the one in force for its assets."""
    FUTURE_VERSION = "future_version"
    """An accepted schedule whose version lies further in the future than versions can
    (docs/wire-contract.md: versions are bounded)."""
    REPLAYED = "replayed"
    """A result for an attempt that is not the command's current one."""
    UNKNOWN_COMMAND = "unknown_command"
    """A result for a command the planner does not have."""
    NOT_DISPATCHED = "not_dispatched"
    """A result for a command that is not in flight (never dispatched, or waiting for its retry)."""
    INVALID = "invalid"
    """Readable, but refused by a rule of the receiving process (``detail`` names it)."""
    UNKNOWN_CHARGE_POINT = "unknown_charge_point"
    """OCPP: a connection for a charge point id the site config does not have (HTTP 404)."""
    BAD_CREDENTIALS = "bad_credentials"
    """OCPP: a connection without the charger's Basic-auth password (HTTP 401); never quoted."""
    NO_SUBPROTOCOL = "no_subprotocol"
    """OCPP: a connection that offered no OCPP version we speak (ocpp1.6, ocpp2.0.1)."""
    DUPLICATE_CONNECTION = "duplicate_connection"
    """OCPP: a second connection for a charger whose connection still answers (HTTP 409)."""
    NESTING_TOO_DEEP = "nesting_too_deep"
    """OCPP: a frame nested deeper than frames.MAX_DEPTH (a CallError, or dropped)."""


class MessageRefused(EventPayload):
    """A message, or one item of a batch, was refused by the process that received it; nothing
    of it was applied. Every refusal is one event and one count of
    ``qubit_messages_refused_total{topic_family,reason}``; only the log lines are rate-limited.
    The raw payload is never quoted."""

    topic: str
    """The topic it arrived on."""
    reason: Annotated[RefusalReason, Strict(False)]
    detail: Text
    """For a human: which field, which rule, which limit; never a secret, never the raw payload."""
    message_id: Id | None = None
    """The sender's id of the refused thing, when one could be read (a command id, a schedule id)."""
    asset_id: Id | None = None
    """The asset it was about, when one could be read."""


# ------------------------------------------------------------------ operators and limits


class OperatorCommandAccepted(AssetPayload):
    """An operator's command (qubit/operator/commands) became the ledger's ``command_id``: its
    COMMAND_* events follow, as for every command."""

    request_id: Id
    """The operator's id of the request (OperatorCommand.request_id)."""
    command_id: Id
    action: Word
    """start_session, stop_session, set_availability, reset, power_limit, soc_target."""


class OperatorCommandRejected(EventPayload):
    """An operator's command the planner will not carry out; nothing was queued. A
    MESSAGE_REFUSED names it too."""

    request_id: Id | None
    """None when the request was too malformed to have one."""
    asset_id: Id | None
    action: str | None
    reason: Word
    """expired (issued more than 5 minutes from the planner's clock), unknown_asset, wrong_kind,
    out_of_range, invalid."""
    message: Text

    @property
    def about_asset(self) -> str | None:
        return self.asset_id


class SetpointCapped(AssetPayload):
    """The planner lowered a setpoint before dispatching it (docs/dispatch.md: limits)."""

    command_id: Id
    command_type: CommandTypeField
    requested: float
    """What the schedule asked for (kW, >= 0; a discharge's rate)."""
    applied: float
    """What was sent (kW)."""
    limit: Word
    """Which limit: ``operator`` (an operator's power limit), ``site_import`` or ``site_export``."""
    limit_kw: float
    """That limit's value (kW): the operator's cap, or the site's import/export limit."""


PAYLOAD_MODELS: dict[EventType, type[EventPayload]] = {
    EventType.COMMAND_CREATED: CommandCreated,
    EventType.COMMAND_DISPATCHED: CommandDispatched,
    EventType.COMMAND_ACKNOWLEDGED: CommandAcknowledged,
    EventType.COMMAND_COMPLETED: CommandCompleted,
    EventType.COMMAND_FAILED: CommandFailed,
    EventType.COMMAND_TIMED_OUT: CommandTimedOut,
    EventType.COMMAND_CANCELLED: CommandCancelled,
    EventType.COMMAND_RETRY_SCHEDULED: CommandRetryScheduled,
    EventType.COMMAND_HELD: CommandHeld,
    EventType.STATE_CHANGED: StateChanged,
    EventType.SCHEDULE_RECEIVED: ScheduleReceived,
    EventType.SCHEDULE_REJECTED: ScheduleRejected,
    EventType.SCHEDULE_PLANNED: SchedulePlanned,
    EventType.SETPOINT_CLAMPED: SetpointClamped,
    EventType.SETPOINT_NOT_FOLLOWED: SetpointNotFollowed,
    EventType.DEVICE_LINK_UP: DeviceLinkUp,
    EventType.DEVICE_LINK_DOWN: DeviceLinkDown,
    EventType.ASSET_SAFE_STATE: AssetSafeState,
    EventType.EMERGENCY_STOP_ACTIVATED: EmergencyStopActivated,
    EventType.EMERGENCY_STOP_RESET: EmergencyStopReset,
    EventType.SERVICE_STATE_CHANGED: ServiceStateChanged,
    EventType.PUBLISH_FAILED: PublishFailed,
    EventType.MESSAGE_REFUSED: MessageRefused,
    EventType.OPERATOR_COMMAND_ACCEPTED: OperatorCommandAccepted,
    EventType.OPERATOR_COMMAND_REJECTED: OperatorCommandRejected,
    EventType.SETPOINT_CAPPED: SetpointCapped,
}
"""Each event type's one payload model."""


def payload_model(event_type: EventType) -> type[EventPayload]:
    return PAYLOAD_MODELS[EventType(event_type)]
