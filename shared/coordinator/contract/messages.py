"""The runtime's MQTT message formats (msgpack maps), validated with pydantic on receipt.

Commands, events and schedules themselves are encoded by ``coordinator.contract.codec``; this
module holds the envelopes the processes exchange around them. Every field is listed in
docs/wire-contract.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Literal, Self, TypeVar

import msgpack
import pydantic
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from coordinator.base import COMMAND_ADAPTER, Command
from coordinator.contract.batching import runs
from coordinator.contract.codec import MAX_ITEMS, MAX_MESSAGE_BYTES, MAX_SCHEDULE_BYTES, DecodeError, unpack
from coordinator.contract.topics import ROOT, SCHEDULES_ACCEPTED, SCHEDULES_IN

Id = Field(min_length=1, max_length=128, pattern=r"^[^/#+\x00]+$")

ACCEPTED_SCHEDULE_ENVELOPE_BYTES = 4096
"""What an AcceptedSchedule adds around the schedule it carries (ids, version, times: a few
hundred bytes; the rest is headroom)."""
MAX_ACCEPTED_SCHEDULE_BYTES = MAX_SCHEDULE_BYTES + ACCEPTED_SCHEDULE_ENVELOPE_BYTES
"""The largest AcceptedSchedule on qubit/schedules/accepted: the largest schedule, wrapped."""
MQTT_PUBLISH_OVERHEAD_BYTES = 1 + 4 + 2 + 65535 + 2
"""What an MQTT 3.1.1 PUBLISH adds to its payload at most: the fixed header (1 byte and a
remaining length of up to 4), the topic (2-byte length and up to 65,535 bytes), the packet id."""


def message_limit(topic: str, max_message_bytes: int) -> int:
    """The largest payload allowed on ``topic``: ``max_message_bytes`` (the setting) for every
    message except schedules (codec.MAX_SCHEDULE_BYTES, and its AcceptedSchedule envelope).

        >>> message_limit("qubit/results/ocpp", 1 << 20), message_limit(SCHEDULES_IN, 1 << 20)
        (1048576, 16777216)
    """
    if topic == SCHEDULES_IN:
        return MAX_SCHEDULE_BYTES
    if topic == SCHEDULES_ACCEPTED:
        return MAX_ACCEPTED_SCHEDULE_BYTES
    return max_message_bytes


def broker_max_packet_size(max_message_bytes: int) -> int:
    """Mosquitto's ``max_packet_size`` for a site whose message limit is ``max_message_bytes``:
    the largest payload any topic allows (``message_limit``) plus the PUBLISH around it. The
    broker disconnects a client that sends a larger packet, so this must admit every message a
    sender lets through, and no more than that.

        >>> broker_max_packet_size(1 << 20)
        16846856
    """
    largest = max(max_message_bytes, MAX_SCHEDULE_BYTES, MAX_ACCEPTED_SCHEDULE_BYTES)
    return largest + MQTT_PUBLISH_OVERHEAD_BYTES


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    def encode(self) -> bytes:
        return _packb(self.model_dump(mode="python"))


M = TypeVar("M", bound=WireModel)


def decode(model: type[M], data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> M:
    """Untrusted bytes -> ``model``, or DecodeError with a specific reason."""
    obj = unpack(data, max_bytes=max_bytes)
    try:
        return model.model_validate(obj)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise DecodeError(f"{model.__name__}: field {where}: {first['msg']}") from None


VERSION_AHEAD_US = 24 * 3600 * 1_000_000
"""How far (microseconds) an AcceptedSchedule's version may lie ahead of the planner's clock.
Versions are the ingester's clock in microseconds since the epoch, so a legitimate one is
never ahead by more than the clocks' skew; a version further ahead is refused
(``future_version``): a forged 2^62 must not outrank every later schedule."""


class AcceptedSchedule(WireModel):
    """Ingester -> planner: a schedule that passed every check, as it was received. The
    planner runs the same checks again before planning it (coordinator.schedule_review)."""

    schedule_id: str = Id
    version: int = Field(ge=0)
    """Microseconds since the epoch when the ingester accepted it; at most VERSION_AHEAD_US
    ahead of the planner's clock."""
    received_at: AwareDatetime
    command_count: int = Field(ge=0)
    schedule: bytes
    """The schedule message exactly as Layer 3 sent it (codec.encode_schedule format)."""


class CommandBatch(WireModel):
    """Planner -> gateway: every command due for this gateway at one tick.

    Items stay plain maps here so that one malformed command does not make the whole batch
    unreadable: each is read with ``codec.command_from_wire`` (strict), and refused alone.
    """

    gateway_id: str = Id
    commands: list[Any]
    """Command maps (``command_to_wire``); anything else in the list is refused as one item."""

    @classmethod
    def of(cls, gateway_id: str, commands: list[Command]) -> CommandBatch:
        return cls(gateway_id=gateway_id, commands=[command_to_wire(c) for c in commands])

    @classmethod
    def split(cls, gateway_id: str, commands: Sequence[Command], max_bytes: int) -> list[Self]:
        """``commands`` for ``gateway_id`` as consecutive batches, each encoding to at most
        ``max_bytes``, in order, none lost (no batch for no commands). ValueError for a
        command too large for a batch of its own."""
        items = [command_to_wire(c) for c in commands]
        return [cls(gateway_id=gateway_id, commands=part) for part in _parts(cls, gateway_id, items, max_bytes)]


def command_to_wire(cmd: Command) -> dict[str, Any]:
    fields: dict[str, Any] = COMMAND_ADAPTER.dump_python(cmd, mode="python")
    return fields


class Outcome(StrEnum):
    ACKNOWLEDGED = "acknowledged"
    """The device accepted the command; completion follows."""
    COMPLETED = "completed"
    FAILED = "failed"
    """This attempt failed; the planner may retry."""
    REFUSED = "refused"
    """The command can never succeed as it is (malformed, unsupported, out of range): no retry."""
    SUPERSEDED = "superseded"
    """Not applied because a newer setpoint of the same asset and channel is in force on the
    device (coordinator.setpoint_order); the error names the newer command. The planner
    finishes the command CANCELLED: no retry."""


class CommandResult(WireModel):
    command_id: str = Id
    asset_id: str = Id
    outcome: Outcome
    at: AwareDatetime
    error: str | None = Field(None, max_length=2000)
    attempt: int | None = Field(None, ge=0)
    """The delivery's attempt it answers (the command's ``attempts`` as dispatched); None from
    a gateway older than this field, or for an item too malformed to have one. The planner
    refuses a result for another attempt than the command's current one."""


class ResultBatch(WireModel):
    """Gateway -> planner."""

    gateway_id: str = Id
    results: list[CommandResult]

    @classmethod
    def split(cls, gateway_id: str, results: Sequence[CommandResult], max_bytes: int) -> list[Self]:
        """``results`` of ``gateway_id`` as consecutive batches, each encoding to at most
        ``max_bytes``, in order, none lost. ValueError for a result too large on its own."""
        return [cls(gateway_id=gateway_id, results=part) for part in _parts(cls, gateway_id, results, max_bytes)]


class ReceivedResultBatch(WireModel):
    """A ResultBatch as the planner reads it: each result validated on its own
    (``CommandResult.model_validate``), so that one malformed result is refused alone and the
    others of the batch are taken."""

    gateway_id: str = Id
    results: list[Any]


def _parts(batch: type[CommandBatch | ResultBatch], gateway_id: str, items: Sequence[Any],
           max_bytes: int) -> list[list[Any]]:
    """``items`` cut so that each run, as ``batch``'s list, encodes to at most ``max_bytes``
    (and holds at most codec.MAX_ITEMS, which receivers enforce too)."""
    if not items:
        return []
    field = "commands" if batch is CommandBatch else "results"
    envelope = len(batch.model_validate({"gateway_id": gateway_id, field: []}).encode()) - 1
    # The same packing as WireModel.encode, item by item: a batch's bytes are the concatenation.
    sizes = [len(_packb(item.model_dump(mode="python") if isinstance(item, BaseModel) else item)) for item in items]
    return [list(items[r.start:r.stop]) for r in runs(sizes, envelope=envelope, max_bytes=max_bytes,
                                                      max_items=MAX_ITEMS)]


def _packb(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, datetime=True, use_bin_type=True)
    return data


class StatusReport(WireModel):
    """Gateway -> tracker: the state a device is in now, in the asset machine's words
    (ChargerState / BatteryState values)."""

    asset_id: str = Id
    state: str = Field(min_length=1, max_length=64)
    at: AwareDatetime
    detail: dict[str, Any] | None = None


class ChargerControl(WireModel):
    """Tests, the demo or a commissioning engineer -> the charge point simulator: make one
    simulated charger plug in, fault, answer slowly... (docs/chargepoint-simulator.md)."""

    charge_point_id: str = Id
    action: str = Field(min_length=1, max_length=32)
    value: pydantic.StrictFloat | pydantic.StrictInt | None = None


class SimulatorRequest(WireModel):
    """Tests and the fault-injection suite -> a simulated gateway (qubit/sim/{gateway_id}):
    make one simulated device stop answering commands (``silent`` true: it neither applies
    nor answers them, as a device that hangs) or answer again (false)."""

    asset_id: str = Id
    silent: pydantic.StrictBool


class Telemetry(WireModel):
    """Gateway -> anyone, QoS 0: measurements of one device at one instant."""

    asset_id: str = Id
    at: AwareDatetime
    values: dict[str, float | int | str | None]


class AssetStateMessage(WireModel):
    """Tracker -> anyone, retained: an asset's current state and how it got there."""

    asset_id: str = Id
    kind: str
    state: str
    previous_state: str | None = None
    trigger: str | None = None
    since: AwareDatetime


class ServiceStatus(WireModel):
    """Each process -> anyone, retained on qubit/services/{service}/status: its module state
    (coordinator.state: lifecycle, operational, health) and why. The Last Will is one of these
    with status "offline", so a process that dies says so too."""

    service: str = Id
    status: Literal["online", "offline"]
    pid: int
    lifecycle: str
    operational: str
    health: str
    reasons: list[str] = Field(default_factory=list)
    """Why health is not Healthy (broker unreachable, link to ast_bay_1 down, ...)."""
    emergency_stop: bool = False
    metrics_port: int | None = None
    """Where the process serves Prometheus metrics (/metrics), if it does."""
    at: AwareDatetime


class EmergencyStop(WireModel):
    """Operator -> every process, retained on qubit/control/emergency_stop: ``active`` true
    stops the site (every asset to its safe state, no dispatching); false is the explicit
    reset that lets dispatching resume. Retained, so a process that starts during a stop
    starts stopped."""

    active: bool
    reason: str = Field(min_length=1, max_length=500)
    issued_by: str = Field(min_length=1, max_length=128)
    at: AwareDatetime


class QueryKind(StrEnum):
    ASSET_STATES = "asset_states"
    COMMAND = "command"
    SCHEDULE = "schedule"


class Query(WireModel):
    """Operator -> tracker."""

    query_id: str = Id
    reply_to: str = Field(pattern=rf"^{re.escape(ROOT)}/query/replies/[^/#+\x00]{{1,128}}$")
    """A reply topic of this site's tree (``topics.query_reply_topic``)."""
    kind: QueryKind
    id: str | None = Field(None, max_length=128)


class QueryReply(WireModel):
    query_id: str = Id
    ok: bool
    result: Any = None
    error: str | None = None


class OperatorAction(StrEnum):
    """What an operator may ask of one asset (OperatorCommand.action)."""

    START_SESSION = "start_session"
    """Charger: start charging the plugged-in vehicle (OCPP RemoteStart/RequestStartTransaction)."""
    STOP_SESSION = "stop_session"
    """Charger: end the session (OCPP RemoteStop/RequestStopTransaction)."""
    SET_AVAILABILITY = "set_availability"
    """Take the asset out of service (``availability`` inoperative) or back (operative)."""
    RESET = "reset"
    """Clear a fault: the device restarts its controller (OCPP Reset, a battery's reset)."""
    POWER_LIMIT = "power_limit"
    """Cap the asset at ``kw`` for ``duration_s`` seconds; the planner caps its setpoints too."""
    SOC_TARGET = "soc_target"
    """Battery: charge or discharge towards ``percent``."""


class Availability(StrEnum):
    OPERATIVE = "operative"
    INOPERATIVE = "inoperative"


MAX_LIMIT_SECONDS = 7 * 24 * 3600
"""The longest operator power limit: a week. A cap meant for ever is a site config change."""


class OperatorCommand(WireModel):
    """Operator -> planner on qubit/operator/commands: one command for one asset. The planner
    checks it against the site (the asset exists, its kind fits the action, the values are in
    range), answers OPERATOR_COMMAND_ACCEPTED with the ledger's ``command_id`` (whose COMMAND_*
    events follow) or OPERATOR_COMMAND_REJECTED, and dispatches it at once."""

    request_id: str = Id
    """The operator's id for this request; a resend with the same id is answered again, not
    carried out twice."""
    asset_id: str = Id
    action: OperatorAction
    availability: Availability | None = None
    """set_availability only."""
    kw: float | None = Field(None, ge=0, allow_inf_nan=False)
    """power_limit only: the cap in kW (>= 0, at most the asset's max_power_kw)."""
    duration_s: float | None = Field(None, gt=0, le=MAX_LIMIT_SECONDS, allow_inf_nan=False)
    """power_limit only: how long the cap holds (seconds); then the asset's max_power_kw again."""
    percent: float | None = Field(None, ge=0, le=100, allow_inf_nan=False)
    """soc_target only."""
    issued_by: str = Field("operator", min_length=1, max_length=128)
    issued_at: AwareDatetime
