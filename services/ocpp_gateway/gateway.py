"""OCPP gateway process: the central system (CSMS) of the site's chargers.

Commands from the planner become OCPP calls on the charger's own connection. Each charger
has one ordered queue and one task working it, so two commands for one charger never
interleave (the ordering rule is checked right before each call) and a slow or dead charger
never delays another. Accepted completes a command; Rejected fails the attempt (the planner
retries); NotSupported is refused for good; a CallError fails with the charger's code and
description; no answer is left to the planner's timeout. A charger that (re)boots gets its
last applied setpoints again, from the durable record, except during an emergency stop and
after one until a new setpoint was applied (the planner restores after the reset). A call a
crash interrupted cannot be known: after a restart it is answered FAILED (the planner retries).

Setpoints are leased (leases.py): each profile ends at validTo, above a fallback profile
installed after every boot; the gateway renews the setpoints in force every half lease, so a
dead coordinator leaves each charger at its fallback within one lease.

    qubit-ocpp-gateway --gateway-id ocpp --site-config deploy/site.toml
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
from typing import Any

import websockets
from ocpp.exceptions import OCPPError

from coordinator.adapters import OCPPAdapter, TranslationError
from coordinator.asset_machines import ChargerState
from coordinator.base import Command, CommandType
from coordinator.contract.events import DeviceLinkDown, DeviceLinkUp, SetpointNotFollowed
from coordinator.contract.messages import Outcome
from coordinator.events import EventType
from coordinator.protocols.ocpp.answers import outcome_of
from coordinator.protocols.ocpp.composite import Unreadable, limit_in_force_w, unproven
from coordinator.protocols.ocpp.internals import inline_validation
from coordinator.runtime.command_intake import result
from coordinator.runtime.device_gateway import DeviceGateway
from coordinator.runtime.service import Publish, base_arguments, load_site, run
from coordinator.runtime.supervision import Supervisor
from coordinator.setpoint_order import Applied
from coordinator.site import OcppListenConfig, Protocol, SiteConfig
from coordinator.timeutil import utcnow

from .central import NO_AUTH_WARNING, CentralSystem, Point
from .leases import lease_end, renew_interval
from .meter_watch import MeterWatch

log = logging.getLogger(__name__)

# Setpoints a rebooting charger must get again: it may have lost its profiles.
RESTORED = (CommandType.SET_CHARGE_RATE, CommandType.SET_POWER_LIMIT)
RESTORE = "restore"
"""A charger queue's item: give the charger its last applied setpoints again."""
RENEW = "renew"
"""A charger queue's item: the same setpoints again, with a fresh lease."""
FALLBACK = "fallback"
"""A charger queue's item: install the fallback profile (after a boot)."""
SAFE_CALL_TIMEOUT = 5.0
"""Seconds each emergency-stop call may take (the 0 W profile, the stop)."""
VERIFIED = (CommandType.SET_CHARGE_RATE, CommandType.SET_POWER_LIMIT)
"""Setpoints that complete only once the charger's composite schedule shows them in force."""
MIN_VERIFY_SECONDS = 1.0
"""The composite schedule's answer may take at least this long, even if the call used up the command's time."""


class OcppGateway(DeviceGateway):
    protocol = Protocol.OCPP

    def __init__(self, site: SiteConfig, publish: Publish, gateway_id: str = "ocpp") -> None:
        super().__init__(site, publish, gateway_id)
        self.assets = {a.asset_id: a for a in site.assets_of(gateway_id) if a.ocpp is not None}
        self.chargers = {a.asset_id: a.ocpp for a in self.assets.values() if a.ocpp is not None}
        """Each charger's OCPP identity, by asset id."""
        self.by_charge_point = {c.charge_point_id: self.assets[a] for a, c in self.chargers.items()}
        self.queues: dict[str, asyncio.Queue[Command | str]] = {}
        """Each charger's work, in arrival order: commands, FALLBACK and RESTORE after a boot, RENEW."""
        self.lease_seconds = site.coordinator.lease_seconds
        self._renewing: set[str] = set()
        """Chargers with a RENEW in their queue: a slow charger gets one, not a pile."""
        self.central = CentralSystem(self.config.ocpp or OcppListenConfig(), self.by_charge_point, self)
        self.meter_watch = MeterWatch()

    def attach(self, supervisor: Supervisor) -> None:
        super().attach(supervisor)
        if not self.central.listen.require_auth:  # not only a log line: SCADA sees it in the retained status
            supervisor.update(config_warnings=(NO_AUTH_WARNING,))

    async def open(self) -> None:
        await self.central.start()
        self.resume()
        self.spawn(self._renew_leases())

    # -- commands ------------------------------------------------------------------

    def submit(self, cmd: Command) -> None:
        if cmd.asset_id not in self.chargers:
            self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.REFUSED,
                                      f"{cmd.asset_id} is not an OCPP charger of gateway {self.gateway_id}")])
            return
        self._queue(cmd.asset_id).put_nowait(cmd)

    def _queue(self, asset_id: str) -> asyncio.Queue[Command | str]:
        queue = self.queues.get(asset_id)
        if queue is None:  # one worker per charger, started with its first item
            queue = self.queues[asset_id] = asyncio.Queue()
            self.spawn(self._work(asset_id, queue))
        return queue

    async def _work(self, asset_id: str, queue: asyncio.Queue[Command | str]) -> None:
        while True:
            item = await queue.get()
            try:
                if isinstance(item, Command):
                    await self.execute(item)
                elif item == FALLBACK:
                    await self._install_fallback(asset_id)
                elif item == RENEW:
                    self._renewing.discard(asset_id)
                    await self._restore_all(asset_id, renewal=True)
                else:
                    await self._restore_all(asset_id)
            except Exception:  # execute answers its own failures; this is a bug, and the queue goes on
                log.exception("%s: queue item %s failed", asset_id, getattr(item, "command_id", item))

    async def execute(self, cmd: Command) -> None:
        if not self.intake.open(cmd):  # handed back (shutdown) while it waited in the queue
            return
        charger = self.chargers[cmd.asset_id]
        point = self.central.points.get(charger.charge_point_id)
        if point is None and self.halted is None:
            self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.FAILED,
                                      f"charger {charger.charge_point_id} is not connected")])
            return
        if not await self.begin(cmd) or point is None:  # answered: the site's stop, or a newer setpoint in force
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cmd.timeout_seconds
        acknowledged = False
        try:
            outcome, error = await self.call(point, charger.connector_id, cmd)
            if outcome is Outcome.COMPLETED and cmd.command_type in VERIFIED and charger.verify_applied:
                # Accepted is only the charger's word: completion waits for the proof.
                self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.ACKNOWLEDGED)])
                acknowledged = True
                outcome, error = await self.verify(point, cmd, deadline - loop.time())
        except Exception as exc:  # a surprise must still end the command, not vanish with its task
            log.exception("%s: %s failed unexpectedly", point.id, cmd.command_id)
            outcome, error = Outcome.FAILED, f"gateway error: {type(exc).__name__}: {exc}"
        if outcome is None:
            self.settled(cmd)
            return  # no answer: the planner's timeout decides
        if outcome is Outcome.COMPLETED:
            await self.mark_applied(cmd)
            if acknowledged:  # proven: the meter is held to it for a while (meter_watch.py)
                self.meter_watch.proven(cmd.asset_id, cmd.command_id, limit_kw=float(cmd.parameters["power_kw"] or 0),
                                        window=charger.meter_check_seconds, now=loop.time())
            done = [result(cmd.command_id, cmd.asset_id, Outcome.COMPLETED, error)]
            self.send_results(done if acknowledged else [result(cmd.command_id, cmd.asset_id, Outcome.ACKNOWLEDGED),
                                                         *done])
        else:
            self.send_results([result(cmd.command_id, cmd.asset_id, outcome, error)])

    @functools.lru_cache(maxsize=64)  # noqa: B019 - a handful of (version, connector) pairs, for the gateway's life
    def _adapter(self, version: str, connector_id: int) -> OCPPAdapter:
        return OCPPAdapter(self.gateway_id, version, connector_id)

    async def call(self, point: Point, connector_id: int, cmd: Command,
                   *, leased: bool = True) -> tuple[Outcome | None, str | None]:
        """Send ``cmd`` as an OCPP call on ``point``; (None, None) when it got no answer in time.
        A setpoint profile ends one lease from now, unless ``leased`` is false."""
        if cmd.command_type is CommandType.STOP_CHARGING and "transaction_id" not in cmd.parameters:
            if point.transaction_id is None:
                return Outcome.FAILED, "no transaction in progress on this charger"
            cmd = dataclasses.replace(cmd, parameters=cmd.parameters | {"transaction_id": point.transaction_id})
        try:
            valid_to = lease_end(utcnow(), self.lease_seconds) if leased else None
            payload = self._adapter(point.version, connector_id).build_call(cmd, valid_to)
        except TranslationError as exc:
            return Outcome.REFUSED, str(exc)
        return await self._send(point, payload, cmd.command_id, cmd.timeout_seconds)

    async def _send(self, point: Point, payload: Any, what: str,
                    timeout_seconds: float) -> tuple[Outcome | None, str | None]:
        try:
            # Our payloads come from the ocpp package's own classes and are checked against the
            # official schemas in the tests; validating each of a thousand calls again at run
            # time cost most of a slot boundary's latency (field notes). Answers are read defensively.
            async with asyncio.timeout(timeout_seconds):
                answer = await point.request(payload)
        except TimeoutError:
            log.warning("%s: no answer to %s within %g s", point.id, what, timeout_seconds)
            return None, None
        except OCPPError as exc:
            # ocpp declares `code` on each OCPPError subclass (the ones it raises), not on the base
            return Outcome.FAILED, f"CallError {exc.code}: {exc.description}"  # type: ignore[attr-defined]
        except websockets.ConnectionClosed:
            return Outcome.FAILED, f"charger {point.id} disconnected during the call"
        return outcome_of(answer)

    async def verify(self, point: Point, cmd: Command, timeout: float) -> tuple[Outcome, str | None]:
        """After an Accepted setpoint: does the charger's composite schedule show it in force?

        COMPLETED when it does (with a detail when no session is in progress: the limit holds,
        nothing is drawn); FAILED "not applied: ..." when the charger enforces another limit,
        FAILED "not proven: ..." when it cannot say (refused, no answer within ``timeout``
        seconds, a malformed answer). Both failures are retried by the planner.
        """
        charger = self.chargers[cmd.asset_id]
        call = self._adapter(point.version, charger.connector_id).composite_schedule_call()
        timeout = max(timeout, MIN_VERIFY_SECONDS)
        try:
            async with asyncio.timeout(timeout):
                answer = await point.request(call)
            in_force_w = limit_in_force_w(answer)
        except TimeoutError:
            return Outcome.FAILED, f"not proven: no answer to GetCompositeSchedule within {timeout:g} s"
        except OCPPError as exc:
            return Outcome.FAILED, f"not proven: GetCompositeSchedule CallError {exc.code}: {exc.description}"  # type: ignore[attr-defined]
        except websockets.ConnectionClosed:
            return Outcome.FAILED, f"not proven: charger {point.id} disconnected before showing its composite schedule"
        except Unreadable as exc:
            return Outcome.FAILED, f"not proven: {exc}"
        wanted_kw = cmd.parameters["power_kw"]
        assert isinstance(wanted_kw, int | float), "build_call refuses a setpoint without a number"
        cap = cmd.command_type is CommandType.SET_POWER_LIMIT
        reason = unproven(float(wanted_kw), in_force_w, charger.verify_tolerance_kw, cap=cap,
                          caps_kw=() if cap else self._caps_kw(cmd.asset_id))
        if reason is not None:
            log.warning("%s: %s %s", point.id, cmd.command_id, reason)
            return Outcome.FAILED, reason
        if point.transaction_id is None:
            shown = "no limit" if in_force_w is None else f"a limit of {in_force_w / 1000:g} kW"
            return Outcome.COMPLETED, f"no session in progress: {shown} in force, nothing drawn"
        return Outcome.COMPLETED, None

    def _caps_kw(self, asset_id: str) -> list[float]:
        """Charger-wide maxima that may hold a connector's limit below its setpoint: the asset's
        rating and the station limit last applied."""
        caps = [self.assets[asset_id].max_power_kw]
        station = self.record.in_force(asset_id, CommandType.SET_POWER_LIMIT)
        if station is not None and isinstance(kw := station.parameters.get("power_kw"), int | float):
            caps.append(float(kw))
        return caps

    # -- what chargers say (called by the handlers) ----------------------------------

    def state(self, charge_point_id: str, state: ChargerState, detail: dict[str, Any]) -> None:
        self.report(self.by_charge_point[charge_point_id].asset_id, state.value, detail)

    def telemetry_of(self, charge_point_id: str, values: dict[str, Any]) -> None:
        asset_id = self.by_charge_point[charge_point_id].asset_id
        self.telemetry(asset_id, values)
        measured = values.get("power_kw")
        if not isinstance(measured, int | float):
            return
        tolerance = self.chargers[asset_id].verify_tolerance_kw
        broken = self.meter_watch.sample(asset_id, measured_kw=float(measured), tolerance_kw=tolerance,
                                         now=asyncio.get_running_loop().time())
        if broken is not None:
            log.warning("%s: meter shows %g kW, above the %g kW limit proven for %s", charge_point_id, measured,
                        broken.limit_kw, broken.command_id)
            self.bus.emit(EventType.SETPOINT_NOT_FOLLOWED, SetpointNotFollowed(
                asset_id=asset_id, command_id=broken.command_id, limit_kw=broken.limit_kw,
                measured_kw=float(measured), tolerance_kw=tolerance))

    def booted(self, charge_point_id: str) -> None:
        asset = self.by_charge_point[charge_point_id]
        # The fallback first, in its queue: it must be there before any setpoint's lease can end.
        self._queue(asset.asset_id).put_nowait(FALLBACK)
        if self.halted is not None:  # a charger that (re)connects during a stop is made safe, not restored
            self.spawn(self._make_safe_one(asset.asset_id, self.halted))
        else:  # in its queue: behind what was sent before, ahead of what comes after
            self._queue(asset.asset_id).put_nowait(RESTORE)

    async def _restore_all(self, asset_id: str, renewal: bool = False) -> None:
        """The charger's last applied setpoints again (it may have lost its profiles, or their
        lease is running out), as the record has them now: a newer one applied meanwhile is
        what is sent."""
        charger = self.chargers[asset_id]
        for applied in self.record.restorable(asset_id):
            point = self.central.points.get(charger.charge_point_id)
            if point is None or self.halted is not None:
                return
            if applied.command_type in RESTORED:
                await self._restore(point, charger.connector_id, applied, "renewed" if renewal else "restored")

    # -- leases ----------------------------------------------------------------------

    async def _install_fallback(self, asset_id: str) -> None:
        """The charger's fallback profile: below every setpoint, no end, at the asset's fallback_kw."""
        charger, asset = self.chargers[asset_id], self.assets[asset_id]
        point = self.central.points.get(charger.charge_point_id)
        if point is None:
            return  # gone again: its next boot installs it
        payload = self._adapter(point.version, charger.connector_id).fallback_call(asset.fallback_kw, utcnow())
        outcome, error = await self._send(point, payload, "the fallback profile", SAFE_CALL_TIMEOUT)
        if outcome is Outcome.COMPLETED:
            log.info("%s: fallback profile %g kW installed", point.id, asset.fallback_kw)
        else:  # the charger keeps its last setpoint past the lease only if it had no fallback before
            log.error("%s: fallback profile %g kW not installed: %s", point.id, asset.fallback_kw,
                      error or "no answer")

    async def _renew_leases(self) -> None:
        """Every half lease, each connected charger's setpoints again with a fresh validTo. Not
        during an emergency stop: the stop's own profile has no end."""
        interval = renew_interval(self.lease_seconds)
        while True:
            await asyncio.sleep(interval)
            if self.halted is not None:
                continue
            for asset_id, charger in self.chargers.items():
                if charger.charge_point_id in self.central.points and asset_id not in self._renewing:
                    self._renewing.add(asset_id)
                    self._queue(asset_id).put_nowait(RENEW)

    # -- the site's emergency stop ---------------------------------------------------

    async def make_safe(self, asset_id: str, reason: str) -> str:
        """0 W on the connector, then the session stopped: each must be Accepted."""
        self.meter_watch.forget(asset_id)  # 0 W now: the stop's own profile, not a proven setpoint
        charger = self.chargers[asset_id]
        point = self.central.points.get(charger.charge_point_id)
        if point is None:
            raise RuntimeError(f"charger {charger.charge_point_id} is not connected")
        connector = charger.connector_id
        zero = Command(
            asset_id, CommandType.SET_CHARGE_RATE, {"power_kw": 0.0}, utcnow(), timeout_seconds=SAFE_CALL_TIMEOUT
        )
        # No lease: the stop holds until the planner's setpoints after the reset replace it.
        outcome, error = await self.call(point, connector, zero, leased=False)
        if outcome is not Outcome.COMPLETED:
            raise RuntimeError(f"0 W profile not accepted: {error or 'no answer'}")
        if point.transaction_id is None:
            return "0 W profile accepted, no session in progress"
        transaction = point.transaction_id
        stop = Command(asset_id, CommandType.STOP_CHARGING, {}, utcnow(), timeout_seconds=SAFE_CALL_TIMEOUT)
        outcome, error = await self.call(point, connector, stop)
        if outcome is not Outcome.COMPLETED:
            raise RuntimeError(f"0 W accepted, but stopping session {transaction} was not: {error or 'no answer'}")
        return f"0 W profile accepted, session {transaction} stopped"

    def reconcile(self, cmd: Command) -> None:
        """A call a crash interrupted: the charger cannot be asked what it did with it."""
        self.send_results([result(cmd.command_id, cmd.asset_id, Outcome.FAILED,
                                  "outcome unknown: the gateway restarted during the call")])

    async def _restore(self, point: Point, connector_id: int, applied: Applied, how: str = "restored") -> None:
        cmd = Command(applied.asset_id, applied.command_type, dict(applied.parameters), applied.scheduled_at,
                      command_id=applied.command_id, attempts=applied.attempt, created_at=applied.created_at)
        refusal = self.intake.limits(cmd)  # a record an older gateway wrote may hold what the intake refuses now
        if refusal is not None:
            self.refuse(self.intake.topic, refusal[0], f"not {how}: {refusal[1]}", message_id=cmd.command_id,
                        asset_id=cmd.asset_id)
            return
        outcome, error = await self.call(point, connector_id, cmd)
        level = logging.INFO if outcome is Outcome.COMPLETED else logging.WARNING
        log.log(level, "%s: setpoint of %s %s: %s %s", point.id, cmd.command_id, how, outcome, error or "")

    def link(self, charge_point_id: str, up: bool, reason: str) -> None:
        asset = self.by_charge_point[charge_point_id]
        if up:
            self.bus.emit(EventType.DEVICE_LINK_UP,
                          DeviceLinkUp(asset_id=asset.asset_id, endpoint=charge_point_id, reason=reason))
        else:
            self.bus.emit(EventType.DEVICE_LINK_DOWN,
                          DeviceLinkDown(asset_id=asset.asset_id, endpoint=charge_point_id, reason=reason))

    async def stop_links(self) -> None:
        await self.central.stop()


def main(argv: list[str] | None = None) -> int:
    parser = base_arguments(__doc__.splitlines()[0])
    parser.add_argument("--gateway-id", default="ocpp")
    args = parser.parse_args(argv)
    logging.getLogger("ocpp").setLevel(logging.WARNING)  # it logs every frame at INFO
    # Chargers' messages are still schema-checked, inline: a thread hand-off per message cost
    # more than the check itself with many chargers (field notes).
    inline_validation()
    # A slot boundary allocates a task, a call and an answer per charger; with the default
    # thresholds the collector walked the whole heap (every connection's objects) in the
    # middle of it. Collect young objects less often; a full collection stays possible.
    gc.set_threshold(50_000, 20, 20)
    return run(f"gateway-{args.gateway_id}", lambda site, publish: OcppGateway(site, publish, args.gateway_id),
               load_site(args.site_config, secrets_for=args.gateway_id))


if __name__ == "__main__":
    raise SystemExit(main())
