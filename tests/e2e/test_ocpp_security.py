"""OCPP security profile 2 end to end, both OCPP versions: wss:// with the site CA, Basic auth from
password files, one connection per charge point id, and a bound on JSON nesting. Real processes,
real TLS sockets; the hostile clients are this test's own websockets."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import ssl
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import websockets
from websockets.typing import Subprotocol

from coordinator.contract.codec import encode_schedule
from coordinator.contract.messages import ServiceStatus, decode
from coordinator.contract.topics import SCHEDULES_IN, service_topic
from services.ocpp_gateway.central import NO_AUTH_WARNING
from tools.broker import free_port
from tools.launcher import ServiceProcesses

pytestmark = pytest.mark.timeout(120)

SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}


def trusting(stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.ca_file))


def auth(cp_id: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{cp_id}:{password}".encode()).decode()}


def connect(stack, cp_id: str, version: str, password: str | None = None, **kwargs):
    return websockets.connect(f"{stack.url}/{cp_id}", subprotocols=[Subprotocol(SUBPROTOCOL[version])],
                              additional_headers=auth(cp_id, password or stack.password_of(cp_id)),
                              ssl=kwargs.pop("ssl", trusting(stack)), proxy=None, **kwargs)


def of(events, kind, asset=None):
    return [e for e in events.events
            if e.event_type.value == kind and (asset is None or e.payload.get("asset_id") == asset)]


def refused(events, reason: str, source: str | None = None) -> list:
    """The MESSAGE_REFUSED events of ``reason`` (from ``source``, e.g. ocpp/CP001) seen so far."""
    return [e for e in of(events, "MESSAGE_REFUSED")
            if e.payload["reason"] == reason and (source is None or e.payload["topic"] == source)]


def refused_total(plain, reason: str) -> float:
    """The gateway's qubit_messages_refused_total{topic_family="ocpp",reason} on its metrics port."""
    status = decode(ServiceStatus, plain(service_topic("gateway-ocpp")).drain(1.0)[-1].payload)
    body = urllib.request.urlopen(f"http://127.0.0.1:{status.metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("qubit_messages_refused_total{") and 'topic_family="ocpp"' in line
               and f'reason="{reason}"' in line)


def start_simulator(stack, events, *only: str):
    args = [a for cp_id in only for a in ("--only", cp_id)]
    stack.start("chargepoint-simulator", *args)  # no --cafile: the site config's ca_file
    assets = {"CP001": "ast_bay_1", "CP002": "ast_bay_2"}
    expect = {assets[c] for c in only} if only else set(assets.values())
    events.wait_for(lambda ev: {e.payload["asset_id"] for e in of(events, "DEVICE_LINK_UP")} >= expect, timeout=20,
                    what="chargers connected over wss://")


def setpoint(plain, kw: float, asset: str, schedule_id: str) -> None:
    idx = pd.date_range(datetime.now(UTC) + timedelta(seconds=0.3), periods=1, freq=timedelta(seconds=5))
    df = pd.DataFrame({"ev_1_kw": [kw]}, index=idx, dtype=float)
    plain().publish(SCHEDULES_IN, encode_schedule(df, asset_map={"ev_1": asset}, site_id="sit_ocpp_test",
                                                  schedule_id=schedule_id))


def completed(events, asset: str, count: int = 1, timeout: float = 20) -> None:
    events.wait_for(lambda ev: len(of(events, "COMMAND_COMPLETED", asset)) >= count, timeout=timeout,
                    what=f"{count} setpoint(s) completed on {asset}")


def test_a_gateway_without_auth_says_so_in_its_retained_status(broker, tmp_path, plain, ocpp_site_template):
    template, password = ocpp_site_template
    text = template.format(port=free_port(), version="1.6", timeout=3.0, password1=password, password2=password)
    site = tmp_path / "site.toml"
    site.write_text(text.replace("[gateways.ocpp]\n", "[gateways.ocpp]\nrequire_auth = false\n", 1))
    procs = ServiceProcesses(broker.host, broker.port, site, tmp_path / "logs")
    procs.start_all(("gateway-ocpp",))
    try:
        deadline = time.monotonic() + 20
        while True:
            told = [decode(ServiceStatus, m.payload) for m in plain(service_topic("gateway-ocpp")).drain(0.5)]
            if told and told[-1].status == "online" and NO_AUTH_WARNING in told[-1].reasons:
                break
            assert time.monotonic() < deadline, f"no require_auth warning in the gateway's status: {told}"
        assert told[-1].health in ("Warning", "Critical")  # Critical while no charger is connected
    finally:
        procs.stop_all()


def test_wss_with_the_site_ca_serves_and_without_it_the_handshake_fails(ocpp_tls_stack, events, plain, version):
    start_simulator(ocpp_tls_stack, events)
    assert "CSMS listening on wss://" in ocpp_tls_stack.log("gateway-ocpp")
    setpoint(plain, 11.0, "ast_bay_1", "sch_tls")
    completed(events, "ast_bay_1")

    async def attempts():
        with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know the site CA
            await connect(ocpp_tls_stack, "CP001", version, ssl=ssl.create_default_context(), open_timeout=5)
        with pytest.raises((websockets.InvalidHandshake, OSError, TimeoutError)):  # plain ws:// gets no HTTP answer
            await websockets.connect(f"ws://127.0.0.1:{ocpp_tls_stack.ocpp_port}/CP001", open_timeout=3,
                                     subprotocols=[Subprotocol(SUBPROTOCOL[version])], proxy=None)

    asyncio.run(attempts())
    log = ocpp_tls_stack.log("gateway-ocpp") + ocpp_tls_stack.log("chargepoint-simulator")
    assert all(ocpp_tls_stack.password_of(cp) not in log for cp in ("CP001", "CP002"))


def test_admission_rules_hold_over_wss(ocpp_tls_stack, events, plain, version):
    async def attempts():
        with pytest.raises(websockets.InvalidStatus) as wrong:
            await connect(ocpp_tls_stack, "CP001", version, password="not-the-password-of-cp001")
        assert wrong.value.response.status_code == 401
        with pytest.raises(websockets.InvalidStatus) as unknown:
            await connect(ocpp_tls_stack, "CP999", version, password="whatever-password-0000")
        assert unknown.value.response.status_code == 404
        with pytest.raises(websockets.InvalidStatus) as no_subprotocol:
            await websockets.connect(f"{ocpp_tls_stack.url}/CP001", ssl=trusting(ocpp_tls_stack), proxy=None,
                                     additional_headers=auth("CP001", ocpp_tls_stack.password_of("CP001")))
        assert no_subprotocol.value.response.status_code == 400
        async with connect(ocpp_tls_stack, "CP001", version, max_size=None) as ws:
            await ws.send("[" + " " * (2 << 20) + "]")  # past the gateway's 1 MiB frame limit
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    asyncio.run(attempts())
    log = ocpp_tls_stack.log("gateway-ocpp")
    assert "refused bad_credentials on ocpp/CP001: CP001: wrong or missing credentials" in log
    assert "not-the-password-of-cp001" not in log
    # Each refusal is the site's MESSAGE_REFUSED event and a count; an unknown id is never repeated.
    events.wait_for(lambda ev: all(refused(events, r) for r in ("bad_credentials", "unknown_charge_point",
                                                                 "no_subprotocol")), timeout=10,
                    what="MESSAGE_REFUSED for each refused connection")
    bad = refused(events, "bad_credentials", "ocpp/CP001")
    assert bad and bad[0].payload["asset_id"] == "ast_bay_1"
    assert all("not-the-password-of-cp001" not in e.payload.model_dump_json() for e in of(events, "MESSAGE_REFUSED"))
    unknown = refused(events, "unknown_charge_point")
    assert [e.payload["topic"] for e in unknown] == ["ocpp/unknown"] and "CP999" not in unknown[0].payload["detail"]
    assert refused(events, "no_subprotocol", "ocpp/CP001")
    for reason in ("bad_credentials", "unknown_charge_point", "no_subprotocol"):
        assert refused_total(plain, reason) == 1.0, reason


def test_a_second_connection_for_a_connected_charger_is_refused_while_the_first_answers(
        ocpp_tls_stack, events, plain, version):
    start_simulator(ocpp_tls_stack, events, "CP001")

    async def duplicate():
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(ocpp_tls_stack, "CP001", version)
        assert refused.value.response.status_code == 409

    asyncio.run(duplicate())
    setpoint(plain, 7.0, "ast_bay_1", "sch_after_duplicate")
    completed(events, "ast_bay_1")  # the first connection is the one that still serves
    assert of(events, "DEVICE_LINK_DOWN", "ast_bay_1") == []
    assert "refused duplicate_connection on ocpp/CP001: CP001: already connected, and that connection answers" \
        in ocpp_tls_stack.log("gateway-ocpp")
    assert refused(events, "duplicate_connection", "ocpp/CP001")

    async def silent_then_back():
        # A charger whose link went silent (a pulled cable): its next connection must get in.
        silent = await connect(ocpp_tls_stack, "CP002", version)
        silent.transport.pause_reading()  # no more pongs
        async with connect(ocpp_tls_stack, "CP002", version, open_timeout=15) as again:
            await again.send(json.dumps([2, "hb-1", "Heartbeat", {}]))
            answer = json.loads(await asyncio.wait_for(again.recv(), 10))
        silent.transport.abort()
        return answer

    answer = asyncio.run(silent_then_back())
    assert answer[:2] == [3, "hb-1"]
    events.collect(1.0)
    down = of(events, "DEVICE_LINK_DOWN", "ast_bay_2")
    assert down and "silent; replaced by a new connection" in down[0].payload["reason"]


def test_a_flood_of_duplicates_does_not_starve_the_real_charger(ocpp_tls_stack, events, plain, version):
    start_simulator(ocpp_tls_stack, events, "CP001")
    statuses: list[int | str] = []

    async def one() -> int | str:
        try:
            async with connect(ocpp_tls_stack, "CP001", version, open_timeout=30):
                return "admitted"
        except websockets.InvalidStatus as refused:
            return refused.response.status_code
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            return type(exc).__name__

    async def flood():
        statuses.extend(await asyncio.gather(*(one() for _ in range(200))))

    flooding = threading.Thread(target=lambda: asyncio.run(flood()))
    flooding.start()
    setpoint(plain, 11.0, "ast_bay_1", "sch_under_flood")
    completed(events, "ast_bay_1", timeout=30)
    flooding.join(60)
    assert not flooding.is_alive() and len(statuses) == 200
    assert "admitted" not in statuses and statuses.count(409) >= 190, statuses
    assert of(events, "DEVICE_LINK_DOWN", "ast_bay_1") == []
    log = ocpp_tls_stack.log("gateway-ocpp")
    assert log.count("refused duplicate_connection on ocpp/CP001") < 20  # rate-limited, not 200 lines
    # ... while every one of them is an event and a count
    refusals = statuses.count(409)
    events.wait_for(lambda ev: len(refused(events, "duplicate_connection")) >= refusals, timeout=10,
                    what=f"{refusals} MESSAGE_REFUSED duplicate_connection")
    assert refused_total(plain, "duplicate_connection") == refusals
    setpoint(plain, 7.0, "ast_bay_1", "sch_after_flood")
    completed(events, "ast_bay_1", count=2)


def test_deeply_nested_frames_get_a_call_error_and_the_gateway_keeps_serving(ocpp_tls_stack, events, plain, version):
    start_simulator(ocpp_tls_stack, events, "CP002")
    code = "FormationViolation" if version == "1.6" else "FormatViolation"

    async def hostile():
        async with connect(ocpp_tls_stack, "CP001", version) as ws:
            answers = []
            for ident, frame in (
                ("deep-array", '[2,"deep-array","Heartbeat",' + "[" * 5000 + "]" * 5000 + "]"),
                ("deep-object", '[2,"deep-object","Heartbeat",' + '{"a":' * 5000 + "1" + "}" * 5000 + "]"),
            ):
                await ws.send(frame)
                answers.append((ident, json.loads(await asyncio.wait_for(ws.recv(), 10))))
            await ws.send("[" * 5000 + "]" * 5000)  # no message id to answer: dropped, the socket stays
            await ws.send(json.dumps([2, "hb-after", "Heartbeat", {}]))
            answers.append(("hb-after", json.loads(await asyncio.wait_for(ws.recv(), 10))))
            # A deep answer to the gateway's own call (the fallback profile it installs after a boot).
            boot = {"chargePointVendor": "q", "chargePointModel": "m"} if version == "1.6" else {
                "chargingStation": {"vendorName": "q", "model": "m"}, "reason": "PowerUp"}
            await ws.send(json.dumps([2, "boot-1", "BootNotification", boot]))
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 10)))[0] != 2:
                pass  # the boot's answer
            await ws.send(f'[3,"{message[1]}",' + "[" * 5000 + "]" * 5000 + "]")
            # Open until the gateway has taken the answer: its call ends then, not at its timeout.
            deadline = asyncio.get_running_loop().time() + 10
            while "CP001: fallback profile" not in ocpp_tls_stack.log("gateway-ocpp"):
                assert asyncio.get_running_loop().time() < deadline, "the fallback call did not end"
                await asyncio.sleep(0.1)
            return answers

    answers = asyncio.run(hostile())
    for ident, answer in answers[:2]:
        assert answer[:3] == [4, ident, code], answer
    assert answers[2][1][:2] == [3, "hb-after"]
    setpoint(plain, 7.0, "ast_bay_2", "sch_after_deep")
    completed(events, "ast_bay_2")  # the other charger was served all along
    log = ocpp_tls_stack.log("gateway-ocpp")
    assert "Traceback" not in log and "RecursionError" not in log
    assert "refused nesting_too_deep on ocpp/CP001: a frame of" in log and "nested deeper than 32 levels" in log
    events.wait_for(lambda ev: len(refused(events, "nesting_too_deep", "ocpp/CP001")) >= 4, timeout=10,
                    what="a MESSAGE_REFUSED for each deep frame")
    assert refused_total(plain, "nesting_too_deep") == 4
    assert f"CP001: fallback profile 0 kW not installed: CallError {code}" in ocpp_tls_stack.log("gateway-ocpp")


def test_a_simulator_that_stops_goes_away_with_1001_not_an_internal_error(ocpp_tls_stack, events, version):
    start_simulator(ocpp_tls_stack, events)
    assert ocpp_tls_stack.kill("chargepoint-simulator", signal.SIGTERM) == 0
    events.wait_for(lambda ev: len(of(events, "DEVICE_LINK_DOWN")) >= 2, timeout=15, what="both links down")
    assert sorted(e.payload["reason"] for e in of(events, "DEVICE_LINK_DOWN")) == ["connection closed (1001)"] * 2
