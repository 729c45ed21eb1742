"""Who the OCPP gateway lets in: known charge point ids, right credentials, an OCPP subprotocol."""

import asyncio
import base64

import pytest
import websockets
from websockets.typing import Subprotocol

pytestmark = pytest.mark.timeout(60)


def test_unknown_charge_point_and_missing_subprotocol_are_refused(ocpp_stack):
    url = f"ws://127.0.0.1:{ocpp_stack.ocpp_port}"
    auth = {"Authorization": "Basic " + base64.b64encode(f"CP001:{ocpp_stack.password}".encode()).decode()}

    async def attempts():
        with pytest.raises(websockets.InvalidStatus) as unknown:
            await websockets.connect(f"{url}/CP999", subprotocols=[Subprotocol("ocpp1.6")], additional_headers=auth)
        assert unknown.value.response.status_code == 404
        with pytest.raises(websockets.InvalidStatus) as unauthenticated:
            await websockets.connect(f"{url}/CP001", subprotocols=[Subprotocol("ocpp1.6")])
        assert unauthenticated.value.response.status_code == 401
        # No subprotocol offered: refused at the handshake (websockets 17 answers 400), or,
        # with websockets versions that let it through, closed by the gateway with 1002.
        try:
            async with websockets.connect(f"{url}/CP001", additional_headers=auth) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 400

    asyncio.run(attempts())


def test_security_profile_2_tls_with_basic_auth(broker, tmp_path, events, ocpp_site_template):
    """wss:// with the site's certificate: the simulator trusts only our CA, and still authenticates."""
    import trustme

    from tools.broker import free_port, wait_for_port
    from tools.launcher import ServiceProcesses

    template, password = ocpp_site_template
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "csms.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    site = template.format(port=port, version="2.0.1", timeout=3.0, password1=password, password2=password)
    site = site.replace(f"port = {port}\n", f'port = {port}\ntls_cert = "{tmp_path / "csms.pem"}"\n', 1)
    (tmp_path / "site.toml").write_text(site)
    procs = ServiceProcesses(broker.host, broker.port, tmp_path / "site.toml", tmp_path / "logs")
    try:
        procs.start_all(("gateway-ocpp",))
        assert wait_for_port("127.0.0.1", port, 10)
        procs.start("chargepoint-simulator", "--cafile", str(tmp_path / "ca.pem"))
        events.wait_for(lambda ev: len(events.of("DEVICE_LINK_UP")) >= 2, timeout=20, what="both chargers over wss://")
        assert "CSMS listening on wss://" in procs.log("gateway-ocpp")
        # A plain ws:// client gets nowhere near the OCPP handler.
        async def plain_ws():
            with pytest.raises((websockets.InvalidHandshake, OSError, TimeoutError)):  # TLS bytes are no HTTP answer
                await websockets.connect(f"ws://127.0.0.1:{port}/CP001", subprotocols=[Subprotocol("ocpp2.0.1")],
                                         open_timeout=3)
        asyncio.run(plain_ws())
    finally:
        procs.stop_all()
