"""One simulated charger: its model, its websocket to the CSMS, and the control knobs.

The connection loop does what a real charger does: connect (HTTP Basic auth, the
configured OCPP subprotocol), BootNotification until Accepted, tell its status, heartbeat,
meter values during a transaction, and reconnect when the link goes (1 s doubling to 10 s;
every 10 s when the CSMS refuses it).

Outgoing messages are queued (``outbox``) and sent one at a time, in order, by one task:
StartTransaction must be answered before MeterValues can name the transaction. Across a
reconnect the queue keeps only transaction messages; statuses are told afresh after boot.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from ocpp.exceptions import OCPPError
from ocpp.v16.enums import AvailabilityStatus, ChargePointErrorCode
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.typing import Subprotocol

from coordinator.site import AssetConfig
from simulators.applied_log import AppliedLog
from simulators.chargepoint.model import (
    MAX_POWER_W,
    ChargerModel,
    Effect,
    HeldProfile,
    TransactionEnded,
    TransactionStarted,
    profile_scope,
    purpose_scope,
    schedule_limit_w,
)
from simulators.chargepoint.points import POINTS, V16Point, V201Point

log = logging.getLogger(__name__)

FIRST_RETRY = 1.0
MAX_RETRY = 10.0
REFUSED_RETRY = 10.0
"""A refused charger (bad credentials, unknown id, subprotocol) tries again slowly."""
REFUSING_HTTP = (401, 403, 404)
BOOT_RETRY = 10.0
MAX_HEARTBEAT = 60.0
DEFAULT_RECONNECT_DELAY = 2.0


class ControlAction(StrEnum):
    """What tests and operators can make a simulated charger do (docs/chargepoint-simulator.md)."""

    PLUG_IN = "plug_in"
    UNPLUG = "unplug"
    SUSPEND = "suspend"
    RESUME = "resume"
    FAULT = "fault"
    RESET = "reset"
    REJECT = "reject"
    SLOW = "slow"
    DROP = "drop"
    DISCONNECT = "disconnect"
    HANGUP = "hangup"
    IGNORE_PROFILES = "ignore_profiles"
    METER_KW = "meter_kw"
    METER_MULTIPLIER = "meter_multiplier"
    OVERDRAW = "overdraw"


class Refused(Exception):
    """The CSMS will not have this charger: retrying fast would not help."""


class SimulatedCharger:
    """One charger of the site config, speaking its configured OCPP version to ``url``.

    ``await charger.run()`` connects and serves until cancelled. ``apply_control`` (call it
    on the event loop) plugs a vehicle in, faults the charger, and so on.
    """

    def __init__(self, asset: AssetConfig, url: str, *, ssl_context: ssl.SSLContext | None = None,
                 meter_interval: float = 5.0, max_power_w: float = MAX_POWER_W, validate_calls: bool = True,
                 applied_log: AppliedLog | None = None) -> None:
        if asset.ocpp is None:
            raise ValueError(f"{asset.asset_id} has no [assets.ocpp] table")
        config = asset.ocpp
        self.asset_id = asset.asset_id
        self.charge_point_id = config.charge_point_id
        self.connector_id = config.connector_id
        self.version = config.version
        self.url = f"{url.rstrip('/')}/{config.charge_point_id}"
        self.ssl_context = ssl_context
        self.meter_interval = meter_interval
        self.validate_calls = validate_calls
        """Check every CSMS call and our answer against the OCPP JSON schemas (a commissioning
        engineer wants to see a malformed call refused); a load test turns it off."""
        self._password = config.password
        self.model = ChargerModel(max_power_w=max_power_w, issues_transaction_ids=self.version == "2.0.1")
        # Control knobs: how this charger answers the CSMS.
        self.rejecting = False
        self.slow_seconds = 0.0
        self.dropping = False
        self.hangup_after: float | None = None
        """Armed by the ``hangup`` control: the next CSMS call is decided (and applied), then the
        connection drops before the answer goes out; reconnect after this many seconds."""
        self.ignoring_profiles = False
        """The ``ignore_profiles`` control: answer SetChargingProfile Accepted and apply nothing,
        the charger that says "Accepted" and goes on as before (its composite schedule tells)."""
        self.meter_kw = False
        """The ``meter_kw`` control: Power.Active.Import in kW instead of W."""
        self.meter_multiplier = 0
        """The ``meter_multiplier`` control (2.0.1): values sent as value x 10^multiplier."""
        self.applied_log = applied_log
        self.outbox: deque[Effect] = deque()
        self._outbox_ready = asyncio.Event()
        self.csms_transaction_ids: dict[str, int] = {}
        """1.6: local transaction id -> the id the CSMS gave in its StartTransaction answer."""
        self.seq_nos: dict[str, int] = {}
        """2.0.1: local transaction id -> next TransactionEvent seqNo."""
        self.online = asyncio.Event()
        """Set while connected and booted."""
        self._ws: ClientConnection | None = None
        self._booted = False
        self._reconnect_after: float | None = None
        self._stopping = False
        self._closing: asyncio.Task[None] | None = None  # held so the close is not garbage-collected mid-way
        self._last_accrual = time.monotonic()
        self._expiry: asyncio.TimerHandle | None = None
        """Wakes the charger at the next validTo of a profile it holds."""

    @property
    def subprotocol(self) -> str:
        return POINTS[self.version].subprotocol

    # -- decisions, for the points (each returns the answer and the effects) -------

    def set_profile(self, target_id: int, purpose: str | None, schedule: Mapping[str, Any], *,
                    stack_level: int = 0, profile_id: int | None = None,
                    valid_to: str | None = None) -> tuple[bool, list[Effect]]:
        self._accrue()
        scope = profile_scope(target_id, purpose, self.connector_id, self.model.in_transaction)
        watts = schedule_limit_w(schedule)
        ends = _posix(valid_to)
        if scope is None or watts is None or (valid_to is not None and ends is None):
            log.info("%s: rejected a %s profile for connector %s", self.charge_point_id, purpose, target_id)
            return False, []
        if self.ignoring_profiles:
            log.info("%s: accepted a %s profile of %.0f W without applying it (control: ignore_profiles)",
                     self.charge_point_id, scope, watts)
            return True, []
        log.info("%s: %s limit %.0f W at stack level %d%s", self.charge_point_id, scope, watts, stack_level,
                 f" until {valid_to}" if valid_to else "")
        before = self.model.station_limit_w if scope == "station" else self.model.connector_limit_w
        effects = self.model.set_limit(watts, scope, stack_level=stack_level, profile_id=profile_id, valid_to=ends)
        effects += self.model.expire(time.time())  # a validTo already past never takes force
        after = self.model.station_limit_w if scope == "station" else self.model.connector_limit_w
        if after is not None:  # what is in force now: a profile below another changes nothing
            self._log_applied(after, before, "SET_POWER_LIMIT" if scope == "station" else "SET_CHARGE_RATE")
        self._arm_expiry()
        return True, effects

    def composite_schedule(self, target_id: int) -> tuple[bool, float | None]:
        """GetCompositeSchedule: (False, None) for a connector that is not this charger's; else
        (True, the limit in force now in W, None when no profile limits it). One connector, so
        connector 0 (the whole charger) shows the same limit."""
        if target_id not in (0, self.connector_id):
            return False, None
        return True, self.model.limit_w

    def clear_profiles(self, target_id: int | None, purpose: str | None) -> tuple[bool, list[Effect]]:
        self._accrue()
        # By purpose, else by connector; neither (or connector 0) clears everything.
        scope = (purpose_scope(purpose) if purpose is not None
                 else "connector" if target_id == self.connector_id else None)
        before = (self.model.connector_limit_w, self.model.station_limit_w)
        effects = self.model.clear_limits(scope)
        self._arm_expiry()
        return before != (self.model.connector_limit_w, self.model.station_limit_w), effects

    def remote_start(self, target_id: int | None, id_tag: str, id_token_type: str | None,
                     remote_start_id: int | None, schedule: Mapping[str, Any]) -> tuple[bool, list[Effect]]:
        self._accrue()
        if target_id not in (None, 0, self.connector_id):
            return False, []
        watts = schedule_limit_w(schedule)
        if watts is not None and not self.model.in_transaction:
            before = self.model.connector_limit_w
            self.model.hold("connector", HeldProfile(watts, tx=True))  # the request's own TxProfile
            self._log_applied(watts, before, "SET_CHARGE_RATE")
        accepted, effects = self.model.remote_start(id_tag, id_token_type, remote_start_id)
        log.info("%s: remote start %s", self.charge_point_id, "accepted" if accepted else "rejected")
        return accepted, effects

    def remote_stop(self, transaction_id: int | str) -> tuple[bool, list[Effect]]:
        self._accrue()
        accepted, effects = self.model.remote_stop(transaction_id)
        log.info("%s: remote stop of %s %s", self.charge_point_id, transaction_id,
                 "accepted" if accepted else "rejected")
        return accepted, effects

    def remote_reset(self) -> tuple[bool, list[Effect]]:
        """A CSMS's Reset: accepted; the charger comes back clean (model.reset: fault cleared).
        The connection stays up: a simulated reboot that keeps its socket."""
        self._accrue()
        log.info("%s: reset by the CSMS", self.charge_point_id)
        return True, self.model.reset()

    def change_availability(self, target_id: int, operative: bool) -> tuple[AvailabilityStatus | None, list[Effect]]:
        """None: not one of this charger's connectors (the point answers Rejected)."""
        self._accrue()
        if target_id not in (0, self.connector_id):
            return None, []
        return self.model.change_availability(operative)

    def _arm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        ends = self.model.next_expiry
        if ends is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_at(loop.time() + max(0.0, ends - time.time()), self._expire)

    def _expire(self) -> None:
        """A profile's validTo passed: the one below it (the fallback) is in force, by the charger alone."""
        self._expiry = None
        self._accrue()
        before = self.model.connector_limit_w
        self.enqueue(self.model.expire(time.time()))
        after = self.model.connector_limit_w
        log.info("%s: a profile's validTo passed; connector limit %s -> %s W", self.charge_point_id, before, after)
        # No limit left is the charger's own maximum.
        self._log_applied(self.model.max_power_w if after is None else after, before, "LEASE_EXPIRED")
        self._arm_expiry()

    def _log_applied(self, watts: float, before_w: float | None, command_type: str) -> None:
        if self.applied_log is not None:
            self.applied_log.applied(self.asset_id, watts / 1000.0, before_w != watts, command_type)

    def transaction_bound(self, local_id: str, transaction_id: int) -> None:
        """1.6: the CSMS named the transaction in its StartTransaction answer."""
        self.csms_transaction_ids[local_id] = transaction_id
        self.model.bind_transaction(local_id, transaction_id)

    # -- control -------------------------------------------------------------------

    def apply_control(self, action: str, value: float | None = None) -> bool:
        """Do what the control message says; False (and a log line) for an unknown action.

        Call on the event loop: it queues messages and may close the websocket.
        """
        try:
            action = ControlAction(action)
        except ValueError:
            log.warning("%s: unknown control action %r ignored", self.charge_point_id, action)
            return False
        self._accrue()
        model = self.model
        match action:
            case ControlAction.PLUG_IN:
                self.enqueue(model.plug_in())
            case ControlAction.UNPLUG:
                self.enqueue(model.unplug())
            case ControlAction.SUSPEND:
                self.enqueue(model.suspend())
            case ControlAction.RESUME:
                self.enqueue(model.resume())
            case ControlAction.FAULT:
                self.enqueue(model.fault(ChargePointErrorCode.ground_failure))
            case ControlAction.RESET:
                self.enqueue(model.reset())
            case ControlAction.REJECT:
                self.rejecting = bool(value)
            case ControlAction.SLOW:
                self.slow_seconds = max(0.0, float(value or 0.0))
            case ControlAction.DROP:
                self.dropping = bool(value)
            case ControlAction.HANGUP:
                self.hangup_after = DEFAULT_RECONNECT_DELAY if value is None else max(0.0, float(value))
            case ControlAction.IGNORE_PROFILES:
                self.ignoring_profiles = bool(value)
            case ControlAction.METER_KW:
                self.meter_kw = bool(value)
            case ControlAction.METER_MULTIPLIER:
                self.meter_multiplier = int(value or 0)
            case ControlAction.OVERDRAW:
                self.model.overdraw_w = max(0.0, float(value or 0.0)) * 1000
            case ControlAction.DISCONNECT:
                if self._ws is None:
                    log.info("%s: disconnect ignored: not connected", self.charge_point_id)
                else:
                    self._reconnect_after = DEFAULT_RECONNECT_DELAY if value is None else max(0.0, float(value))
                    self._closing = asyncio.get_running_loop().create_task(
                        self._ws.close(1000, "disconnect (simulator control)"))
        log.info("%s: control %s%s -> %s", self.charge_point_id, action.value,
                 "" if value is None else f" {value:g}", model.status.value)
        return True

    async def hang_up(self) -> bool:
        """If the ``hangup`` control is armed: close the connection now (before the call being
        answered is answered) and reconnect later. True if it hung up."""
        if self.hangup_after is None or self._ws is None:
            return False
        self._reconnect_after, self.hangup_after = self.hangup_after, None
        log.info("%s: hanging up mid-call (control: hangup)", self.charge_point_id)
        await self._ws.close(1000, "hangup mid-call (simulator control)")
        return True

    def enqueue(self, effects: list[Effect]) -> None:
        if effects:
            self.outbox.extend(effects)
            self._outbox_ready.set()

    # -- connection ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, boot and serve until cancelled; reconnect as a real charger does."""
        backoff, delay = FIRST_RETRY, 0.0
        while not self._stopping:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                booted = await self._connect_once()
            except Refused as exc:
                log.error("%s: refused by the CSMS: %s; trying again in %.0f s",
                          self.charge_point_id, exc, REFUSED_RETRY)
                delay = REFUSED_RETRY
                continue
            except (TimeoutError, OSError, ConnectionClosed, InvalidHandshake) as exc:
                log.warning("%s: cannot reach the CSMS at %s: %s",
                            self.charge_point_id, self.url, exc or type(exc).__name__)
                booted = False
            except Exception:  # a bad URL, a TLS error, a protocol surprise: never take the fleet down
                log.exception("%s: connection failed", self.charge_point_id)
                booted, backoff = False, MAX_RETRY
            if self._stopping:
                return
            if self._reconnect_after is not None:
                delay, self._reconnect_after, backoff = self._reconnect_after, None, FIRST_RETRY
                continue
            if booted:
                backoff = FIRST_RETRY
            delay, backoff = backoff, min(backoff * 2, MAX_RETRY)
            log.info("%s: reconnecting in %.0f s", self.charge_point_id, delay)

    async def stop(self) -> None:
        """Power down: close the connection as a charger that goes away (1001) and do not reconnect.

        Cancelling ``run`` alone would close it from inside ``async with ws``, which websockets
        answers with 1011 (internal error): the CSMS would log a crash that never happened."""
        self._stopping = True
        ws = self._ws
        if ws is not None:
            await ws.close(CloseCode.GOING_AWAY, "charger stopping")

    def _headers(self) -> dict[str, str]:
        if self._password is None:
            return {}
        token = base64.b64encode(f"{self.charge_point_id}:{self._password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def _connect_once(self) -> bool:
        """One connection's life; True if it got as far as an accepted boot."""
        try:
            ws = await connect(self.url, subprotocols=[Subprotocol(self.subprotocol)],
                               additional_headers=self._headers(), ssl=self.ssl_context, proxy=None,
                               compression=None, open_timeout=10,
                               close_timeout=2, ping_interval=30)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in REFUSING_HTTP:
                raise Refused(f"HTTP {status} {exc.response.reason_phrase}") from None
            raise
        async with ws:
            if ws.subprotocol != self.subprotocol:  # websockets accepts a server that picked none
                raise Refused(f"subprotocol {self.subprotocol} not accepted (server chose {ws.subprotocol})")
            return await self._session(ws)

    async def _session(self, ws: ClientConnection) -> bool:
        point = POINTS[self.version](self, ws)
        self._ws, self._booted = ws, False
        reader = asyncio.create_task(point.start(), name=f"{self.charge_point_id}-reader")
        life = asyncio.create_task(self._live(point), name=f"{self.charge_point_id}-life")
        try:
            await asyncio.wait({reader, life}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, life):
                task.cancel()
            await asyncio.gather(reader, life, return_exceptions=True)
            point.close()
            self._ws = None
            self.online.clear()
        if life.done() and not life.cancelled() and life.exception() is not None:
            log.error("%s: session failed", self.charge_point_id, exc_info=life.exception())
        log.info("%s: connection closed (%s)", self.charge_point_id, ws.close_code)
        return self._booted

    async def _live(self, point: V16Point | V201Point) -> None:
        interval = await self._boot(point)
        self._booted = True
        # Statuses queued while offline are stale; transaction messages are owed.
        kept = [e for e in self.outbox if isinstance(e, TransactionStarted | TransactionEnded)]
        self.outbox.clear()
        self.enqueue([*kept, self.model.report(announce=True)])
        self.online.set()
        log.info("%s: booted (OCPP %s), %s", self.charge_point_id, self.version, self.model.status.value)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._send_loop(point))
            group.create_task(self._heartbeats(point, interval))
            group.create_task(self._meter_loop())

    async def _boot(self, point: V16Point | V201Point) -> float:
        """BootNotification until Accepted; the heartbeat interval to keep (at most 60 s)."""
        while True:
            try:
                accepted, interval = await point.boot()
            except (TimeoutError, OCPPError) as exc:
                log.warning("%s: BootNotification failed (%s); trying again", self.charge_point_id, exc or "timeout")
                await asyncio.sleep(BOOT_RETRY)
                continue
            if accepted:
                return float(interval) if 0 < interval <= MAX_HEARTBEAT else MAX_HEARTBEAT
            log.warning("%s: BootNotification not accepted; trying again", self.charge_point_id)
            await asyncio.sleep(min(interval, MAX_HEARTBEAT) if interval > 0 else BOOT_RETRY)

    async def _send_loop(self, point: V16Point | V201Point) -> None:
        while True:
            while not self.outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
            effect = self.outbox[0]
            try:
                await point.send(effect)
            except ConnectionClosed:
                return  # the effect stays queued; the reader ends the session
            except OCPPError as exc:
                log.warning("%s: CSMS answered %s with a CallError: %s",
                            self.charge_point_id, type(effect).__name__, exc)
            except TimeoutError:
                log.warning("%s: no answer to %s", self.charge_point_id, type(effect).__name__)
            if self.outbox and self.outbox[0] is effect:
                self.outbox.popleft()

    async def _heartbeats(self, point: V16Point | V201Point, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await point.heartbeat()
            except ConnectionClosed:
                return
            except (TimeoutError, OCPPError) as exc:
                log.warning("%s: heartbeat failed: %s", self.charge_point_id, exc or "timeout")

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(self.meter_interval)
            self._accrue()
            sample = self.model.meter()
            if sample is not None:
                self.enqueue([sample])

    def _accrue(self) -> None:
        """Integrate the energy meter up to now, before anything changes the power."""
        now = time.monotonic()
        self.model.advance(now - self._last_accrual)
        self._last_accrual = now


def _posix(valid_to: str | None) -> float | None:
    """An OCPP dateTime as POSIX seconds; None when absent or unreadable (or without a zone)."""
    if valid_to is None:
        return None
    try:
        at = datetime.fromisoformat(valid_to)
    except (TypeError, ValueError):
        return None
    return at.timestamp() if at.tzinfo is not None else None
