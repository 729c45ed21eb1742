"""Who the OCPP gateway lets in: known charge point ids, right credentials, an OCPP subprotocol."""

import asyncio
import base64

import pytest
import websockets

pytestmark = pytest.mark.timeout(60)


def test_unknown_charge_point_and_missing_subprotocol_are_refused(ocpp_stack):
    url = f"ws://127.0.0.1:{ocpp_stack.ocpp_port}"
    auth = {"Authorization": "Basic " + base64.b64encode(f"CP001:{ocpp_stack.password}".encode()).decode()}

    async def attempts():
        with pytest.raises(websockets.InvalidStatus) as unknown:
            await websockets.connect(f"{url}/CP999", subprotocols=["ocpp1.6"], additional_headers=auth)
        assert unknown.value.response.status_code == 404
        with pytest.raises(websockets.InvalidStatus) as unauthenticated:
            await websockets.connect(f"{url}/CP001", subprotocols=["ocpp1.6"])
        assert unauthenticated.value.response.status_code == 401
        # No subprotocol offered: refused at the handshake (websockets 17 answers 400), or,
        # with websockets versions that let it through, closed by the gateway with 1002.
        try:
            async with websockets.connect(f"{url}/CP001", additional_headers=auth) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
            assert closed.value.rcvd.code == 1002
        except websockets.InvalidStatus as refused:
            assert refused.response.status_code == 400

    asyncio.run(attempts())
