"""The websocket server chargers connect to, and one OCPP handler per connected charger.

A connection is accepted only from a charge point id of the site config, with its
password when auth is required (HTTP Basic: security profile 1, or 2 over TLS), and with
a subprotocol we speak: ocpp1.6 or ocpp2.0.1, negotiated per connection. With tls_cert the
server speaks wss:// only, TLS 1.2 or later (security profile 2).

One connection per charge point id: a second one is refused (HTTP 409) while the first still
answers a ping; if the first is silent, it is dropped and the newcomer takes its place
(docs/ocpp.md). Every frame is checked for nesting (frames.py) before the ``ocpp`` package
parses it: too deep is a CallError (or, when no message id can be read, dropped).

Every refusal (a connection or a frame) is the gateway's MESSAGE_REFUSED event and a count of
``qubit_messages_refused_total{topic_family="ocpp"}`` (runtime/refusals.py), under the source
``ocpp/<charge_point_id>``: the id only when it is one of the site's, else ``ocpp/unknown``,
so a hostile id grows neither the labels nor the events' content.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import itertools
import logging
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol

import websockets
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as V16ChargePoint
from ocpp.v16 import call_result as v16_result
from ocpp.v16.datatypes import IdTagInfo
from ocpp.v16.enums import Action as V16Action
from ocpp.v16.enums import AuthorizationStatus, RegistrationStatus
from ocpp.v201 import ChargePoint as V201ChargePoint
from ocpp.v201 import call_result as v201_result
from ocpp.v201.datatypes import IdTokenInfoType
from ocpp.v201.enums import Action as V201Action
from ocpp.v201.enums import AuthorizationStatusEnumType, RegistrationStatusEnumType
from websockets.asyncio.server import Server, ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from coordinator.asset_machines import ChargerState
from coordinator.contract.events import RefusalReason
from coordinator.protocols.ocpp.frames import MAX_DEPTH, message_id, too_deep
from coordinator.protocols.ocpp.internals import exchange, handle_call
from coordinator.protocols.ocpp.meter import power_kw
from coordinator.protocols.ocpp.payload import answer_payload, call_payload
from coordinator.protocols.ocpp.status import v16_state, v201_connector_state, v201_transaction_state
from coordinator.protocols.ocpp.version import SUBPROTOCOLS, OCPPVersion
from coordinator.runtime.refusals import OCPP_SOURCE, Refusals
from coordinator.site import AssetConfig, OcppListenConfig

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 60
PROBE_SECONDS = 5.0
"""A second connection for a connected id: how long the first has to answer a ping."""
PROBE_FRESH_SECONDS = 5.0
"""A first connection that answered a ping this recently is taken as alive without another."""
_transaction_ids = itertools.count(1)

NO_AUTH_WARNING = "require_auth = false: any client that knows a charge point id is let in as that charger"
"""Logged at start and kept in the gateway's ServiceStatus reasons (health Warning) while it runs."""

Refuse = Callable[[str, RefusalReason, str], None]
"""refuse(charge_point_id, reason, detail): CentralSystem.refuse."""


class Sink(Protocol):
    """What the handlers tell the gateway."""

    def state(self, charge_point_id: str, state: ChargerState, detail: dict[str, Any]) -> None: ...
    def telemetry_of(self, charge_point_id: str, values: dict[str, Any]) -> None: ...
    def booted(self, charge_point_id: str) -> None: ...
    def link(self, charge_point_id: str, up: bool, reason: str) -> None: ...
    @property
    def refusals(self) -> Refusals:
        """The process's refusals (MESSAGE_REFUSED events, counted in metrics)."""
        ...


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _Requests:
    """The CSMS's own calls, without ``ChargePoint.call``'s per-call costs.

    ``call`` serialises the payload with deep copies, may validate it and builds a result
    dataclass that raises on any unexpected field; at a slot boundary with a thousand chargers
    that was most of the latency. ``request`` sends the same JSON (``call_payload``) through
    the package's own lock and response queue (``internals.exchange``, the one place that
    touches them) and hands back the answer's payload as a plain dict for
    ``answers.outcome_of`` to read defensively.
    """

    id: str
    version: OCPPVersion
    connection: ServerConnection
    refuse: Refuse
    """Where a refused frame goes (the CentralSystem's ``refuse``)."""

    async def request(self, call: Any) -> dict[str, Any]:
        """Send ``call`` (an ``ocpp`` call dataclass); its answer's payload, snake_case.

        Raises OCPPError for a CallError, ConnectionClosed when the link drops. Bound it with
        ``asyncio.timeout``: it waits as long as the charger takes.
        """
        # The action is the call class's name (what ChargePoint.call sends); build_call made the call
        # from this version's classes, so it is not looked up in the Action enum again per call.
        message = Call(unique_id=str(uuid.uuid4()), action=type(call).__name__, payload=call_payload(call))
        response = await exchange(self, message, on_stray=self._stray)  # type: ignore[arg-type]
        if isinstance(response, CallError):
            raise response.to_exception()
        payload = answer_payload(response.payload)
        return payload if isinstance(payload, dict) else {}

    def _stray(self, response: CallResult | CallError) -> None:
        log.warning("%s: late answer to an earlier call %s ignored", self.id, response.unique_id)

    async def route_message(self, raw_msg: str) -> None:
        """The package's routing, after the nesting check its ``json.loads`` needs."""
        if isinstance(raw_msg, str) and too_deep(raw_msg):
            await self._refuse_deep(raw_msg)
            return
        await super().route_message(raw_msg)  # type: ignore[misc]  # ocpp's ChargePoint, after us in the MRO

    async def _handle_call(self, msg: Call) -> None:
        """The package's routing hands every call from the charger here: ``handle_call``, its
        answer without its per-call costs (internals.py)."""
        await handle_call(self, msg)  # type: ignore[arg-type]  # a ChargePoint: ocpp's, after us in the MRO

    async def _refuse_deep(self, frame: str) -> None:
        """A frame nested deeper than MAX_DEPTH: a CallError to a Call, a CallError in place of an answer."""
        code = "FormationViolation" if self.version is OCPPVersion.V16 else "FormatViolation"
        description = f"nested deeper than {MAX_DEPTH} levels"
        ident = message_id(frame)
        self.refuse(self.id, RefusalReason.NESTING_TOO_DEEP,
                    f"a frame of {len(frame)} characters nested deeper than {MAX_DEPTH} levels")
        if ident is None:
            return  # nothing to answer to; the connection goes on
        kind, unique_id = ident
        error = CallError(unique_id=unique_id, error_code=code, error_description=description, error_details={})
        if kind == MessageType.Call:
            await self.connection.send(error.to_json())
        else:  # an answer to one of our calls: the call ends with this error, not a timeout
            self._response_queue.put_nowait(error)  # type: ignore[attr-defined]  # internals.PRIVATE_MEMBERS


class V16Point(_Requests, V16ChargePoint):
    def __init__(self, charge_point_id: str, connection: ServerConnection, sink: Sink, connector_id: int) -> None:
        super().__init__(charge_point_id, connection, response_timeout=300)
        self.connection, self.sink, self.connector_id = connection, sink, connector_id
        self.version = OCPPVersion.V16
        self.transaction_id: int | str | None = None

    @on(V16Action.boot_notification)
    def on_boot(self, **_: Any) -> v16_result.BootNotification:
        return v16_result.BootNotification(
            current_time=_now(), interval=HEARTBEAT_SECONDS, status=RegistrationStatus.accepted
        )

    @after(V16Action.boot_notification)
    def after_boot(self, **_: Any) -> None:
        self.sink.booted(self.id)

    @on(V16Action.heartbeat)
    def on_heartbeat(self) -> v16_result.Heartbeat:
        return v16_result.Heartbeat(current_time=_now())

    @on(V16Action.authorize)
    def on_authorize(self, id_tag: str) -> v16_result.Authorize:
        return v16_result.Authorize(id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @on(V16Action.status_notification)
    def on_status(self, connector_id: int, error_code: str, status: str, **rest: Any) -> v16_result.StatusNotification:
        state = v16_state(status)
        if connector_id == self.connector_id and state is not None:
            self.sink.state(self.id, state, {"ocpp_status": status, "error_code": error_code})
        return v16_result.StatusNotification()

    @on(V16Action.start_transaction)
    def on_start(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> v16_result.StartTransaction:
        self.transaction_id = next(_transaction_ids)
        accepted = IdTagInfo(status=AuthorizationStatus.accepted)
        return v16_result.StartTransaction(transaction_id=self.transaction_id, id_tag_info=accepted)

    @on(V16Action.stop_transaction)
    def on_stop(self, meter_stop: int, timestamp: str, transaction_id: int, **_: Any) -> v16_result.StopTransaction:
        if transaction_id == self.transaction_id:
            self.transaction_id = None
        return v16_result.StopTransaction()

    @on(V16Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list, **_: Any) -> v16_result.MeterValues:
        power = power_kw(meter_value)
        if power is not None:
            self.sink.telemetry_of(self.id, {"power_kw": power})
        return v16_result.MeterValues()


class V201Point(_Requests, V201ChargePoint):
    def __init__(self, charge_point_id: str, connection: ServerConnection, sink: Sink, evse_id: int) -> None:
        super().__init__(charge_point_id, connection, response_timeout=300)
        self.connection, self.sink, self.evse_id = connection, sink, evse_id
        self.version = OCPPVersion.V201
        self.transaction_id: str | None = None

    @on(V201Action.boot_notification)
    def on_boot(self, **_: Any) -> v201_result.BootNotification:
        return v201_result.BootNotification(current_time=_now(), interval=HEARTBEAT_SECONDS,
                                            status=RegistrationStatusEnumType.accepted)

    @after(V201Action.boot_notification)
    def after_boot(self, **_: Any) -> None:
        self.sink.booted(self.id)

    @on(V201Action.heartbeat)
    def on_heartbeat(self) -> v201_result.Heartbeat:
        return v201_result.Heartbeat(current_time=_now())

    @on(V201Action.authorize)
    def on_authorize(self, id_token: dict, **_: Any) -> v201_result.Authorize:
        return v201_result.Authorize(id_token_info=IdTokenInfoType(status=AuthorizationStatusEnumType.accepted))

    @on(V201Action.status_notification)
    def on_status(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **_: Any
    ) -> v201_result.StatusNotification:
        state = v201_connector_state(connector_status)
        if evse_id == self.evse_id and state is not None:
            self.sink.state(self.id, state, {"ocpp_status": connector_status})
        return v201_result.StatusNotification()

    @on(V201Action.transaction_event)
    def on_transaction(
        self, event_type: str, timestamp: str, trigger_reason: str, seq_no: int,
        transaction_info: dict, meter_value: list | None = None, **_: Any,
    ) -> v201_result.TransactionEvent:
        if event_type == "Ended":
            self.transaction_id = None
        else:
            self.transaction_id = transaction_info.get("transaction_id")
        state = v201_transaction_state(event_type, transaction_info.get("charging_state"),
                                       transaction_info.get("stopped_reason"), trigger_reason)
        if state is not None:
            self.sink.state(self.id, state, {"ocpp_event": event_type, "trigger_reason": trigger_reason})
        power = power_kw(meter_value)
        if power is not None:
            self.sink.telemetry_of(self.id, {"power_kw": power})
        return v201_result.TransactionEvent()

    @on(V201Action.notify_report)
    def on_notify_report(self, **_: Any) -> v201_result.NotifyReport:
        return v201_result.NotifyReport()

    @on(V201Action.meter_values)
    def on_meter_values(self, evse_id: int, meter_value: list, **_: Any) -> v201_result.MeterValues:
        power = power_kw(meter_value)
        if power is not None:
            self.sink.telemetry_of(self.id, {"power_kw": power})
        return v201_result.MeterValues()


Point = V16Point | V201Point


def basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    """Does an Authorization header carry exactly these credentials? Constant-time compare."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    given_user, _, given_password = given.partition(":")
    return hmac.compare_digest(given_user.encode(), user.encode()) and hmac.compare_digest(
        given_password.encode(), password.encode())


def offered_subprotocols(headers: list[str]) -> set[str]:
    """The subprotocols a handshake offers (Sec-WebSocket-Protocol, comma-separated, maybe repeated)."""
    return {p.strip() for header in headers for p in header.split(",") if p.strip()}


def server_tls_context(listen: OcppListenConfig) -> ssl.SSLContext | None:
    """The wss:// context of ``listen`` (TLS 1.2 or later, the site's certificate), None without tls_cert."""
    if listen.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(listen.tls_cert, listen.tls_key)
    return context


class CentralSystem:
    def __init__(self, listen: OcppListenConfig, chargers: dict[str, AssetConfig], sink: Sink) -> None:
        self.listen, self.chargers, self.sink = listen, chargers, sink
        self.points: dict[str, Point] = {}
        self._server: Server | None = None
        self._probes: dict[str, asyncio.Task[bool]] = {}
        """A running liveness check of a connected charger, shared by every duplicate that waits on it."""
        self._alive_at: dict[str, float] = {}
        """When each connected charger last answered a liveness check (loop time)."""

    async def start(self) -> None:
        context = server_tls_context(self.listen)
        if not self.listen.require_auth:
            log.warning("%s (no OCPP security profile); set require_auth = true and give each charger a password_file",
                        NO_AUTH_WARNING)
        if context is None:
            log.warning("no tls_cert: chargers connect over ws://, their passwords cross the network in clear "
                        "(security profile 1); set tls_cert and tls_key for wss:// (profile 2)")
        self._server = await websockets.serve(
            self._serve, self.listen.host, self.listen.port, subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            process_request=self._admit, ssl=context, ping_interval=30,
        )
        log.info("CSMS listening on %s://%s:%s", "wss" if context else "ws", self.listen.host, self.listen.port)

    def refuse(self, charge_point_id: str, reason: RefusalReason, detail: str) -> None:
        """One refused connection or frame: the process's MESSAGE_REFUSED event and count. An id
        that is not one of the site's is never repeated (``ocpp/unknown``): it is the sender's text."""
        asset = self.chargers.get(charge_point_id)
        source = f"{OCPP_SOURCE}/{charge_point_id if asset is not None else 'unknown'}"
        self.sink.refusals.refuse(source, reason, detail, asset_id=asset.asset_id if asset else None, logger=log)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @staticmethod
    def charge_point_id(path: str) -> str:
        return path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]

    async def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = self.charge_point_id(request.path)
        asset = self.chargers.get(cp_id)
        if asset is None:
            self.refuse(cp_id, RefusalReason.UNKNOWN_CHARGE_POINT,
                        f"connection for a charge point id the site does not have ({len(cp_id)} characters)")
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
        if self.listen.require_auth:
            password = asset.ocpp.password if asset.ocpp else None
            if password is None or not basic_auth_ok(request.headers.get("Authorization"), cp_id, password):
                # the credentials themselves are never logged
                self.refuse(cp_id, RefusalReason.BAD_CREDENTIALS, f"{cp_id}: wrong or missing credentials")
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "authentication required\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="qubit"'
                return response
        offered = offered_subprotocols(request.headers.get_all("Sec-WebSocket-Protocol"))
        if not offered & set(SUBPROTOCOLS):  # ours to refuse (and report), before websockets answers 400 itself
            shown = ", ".join(sorted(offered))[:64]
            self.refuse(cp_id, RefusalReason.NO_SUBPROTOCOL, f"{cp_id}: no OCPP subprotocol offered ({shown!r})")
            return connection.respond(HTTPStatus.BAD_REQUEST, "an OCPP subprotocol (ocpp1.6, ocpp2.0.1) is required\n")
        if cp_id in self.points and await self._still_alive(cp_id):
            self.refuse(cp_id, RefusalReason.DUPLICATE_CONNECTION,
                        f"{cp_id}: already connected, and that connection answers")
            return connection.respond(HTTPStatus.CONFLICT, "charge point already connected\n")
        return None

    async def _still_alive(self, cp_id: str) -> bool:
        """Does the connected ``cp_id`` answer a ping? A silent one is dropped (its place is free).

        One check at a time per charger, shared by every duplicate waiting; an answer counts
        for PROBE_FRESH_SECONDS, so a flood of duplicates costs the charger one ping."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._alive_at.get(cp_id, -PROBE_FRESH_SECONDS) < PROBE_FRESH_SECONDS:
            return True
        probe = self._probes.get(cp_id)
        if probe is None:
            probe = self._probes[cp_id] = asyncio.create_task(self._probe(cp_id), name=f"probe {cp_id}")
            probe.add_done_callback(lambda _: self._probes.pop(cp_id, None))
        return await asyncio.shield(probe)  # one newcomer giving up must not cancel the others' check

    async def _probe(self, cp_id: str) -> bool:
        point = self.points.get(cp_id)
        if point is None:
            return False
        try:
            async with asyncio.timeout(PROBE_SECONDS):
                await (await point.connection.ping())
        except (TimeoutError, websockets.ConnectionClosed):
            if self.points.get(cp_id) is point:
                log.warning("%s: a new connection, and the current one does not answer a ping: replacing it", cp_id)
                del self.points[cp_id]
                self.sink.link(cp_id, False, "silent; replaced by a new connection")
                point.connection.transport.abort()  # a silent peer would hold a close handshake for its timeout
            return False
        self._alive_at[cp_id] = asyncio.get_running_loop().time()
        return True

    async def _serve(self, connection: ServerConnection) -> None:
        request = connection.request
        if request is None:  # websockets calls the handler only after a handshake
            raise RuntimeError("websocket handler called without a handshake request")
        cp_id = self.charge_point_id(request.path)
        if connection.subprotocol not in SUBPROTOCOLS:  # websockets lets a missing subprotocol through
            offered = (request.headers.get("Sec-WebSocket-Protocol") or "")[:64]
            self.refuse(cp_id, RefusalReason.NO_SUBPROTOCOL, f"{cp_id}: no OCPP subprotocol offered ({offered!r})")
            await connection.close(1002, "an OCPP subprotocol (ocpp1.6, ocpp2.0.1) is required")
            return
        asset = self.chargers[cp_id]
        connector = asset.ocpp.connector_id if asset.ocpp else 1
        kind = V16Point if OCPPVersion.of_subprotocol(connection.subprotocol) is OCPPVersion.V16 else V201Point
        point: Point = kind(cp_id, connection, self.sink, connector)
        point.refuse = self.refuse
        if cp_id in self.points:  # admitted alongside another newcomer: the first one in keeps its place
            self.refuse(cp_id, RefusalReason.DUPLICATE_CONNECTION, f"{cp_id}: already connected (admitted alongside)")
            await connection.close(1008, "charge point already connected")
            return
        self.points[cp_id] = point
        self._alive_at.pop(cp_id, None)
        self.sink.link(cp_id, True, connection.subprotocol)
        reason = "connection closed"
        try:
            await point.start()
        except websockets.ConnectionClosed as exc:
            reason = f"connection closed ({exc.code})"
        finally:
            if self.points.get(cp_id) is point:
                del self.points[cp_id]
                self.sink.link(cp_id, False, reason)
