"""A site with two OCPP gateways whose chargers two simulator processes share (--gateway-id twice,
--part K/N), and a second Modbus gateway: each gateway is its own process and identity
(ServiceProcesses.start_gateway), and every device links up behind its own gateway."""

from __future__ import annotations

import pytest

from tools.broker import free_port
from tools.launcher import ServiceProcesses

pytestmark = pytest.mark.timeout(120)

PASSWORD = "several-gateways-0123456789"


def site_toml(ocpp_ports: list[int], battery_ports: list[int]) -> str:
    lines = ['site_id = "sit_several"']
    for g, port in enumerate(ocpp_ports, 1):
        lines += ["[[gateways]]", f'gateway_id = "ocpp-{g}"', 'protocol = "ocpp"', "[gateways.ocpp]",
                  'host = "127.0.0.1"', f"port = {port}"]
    lines += ["[[gateways]]", 'gateway_id = "modbus-2"', 'protocol = "modbus"']
    for g in range(1, len(ocpp_ports) + 1):
        for i in range(3):
            lines += ["[[assets]]", f'asset_id = "ast_cp_{g}_{i}"', 'kind = "ev_charger"', f'gateway_id = "ocpp-{g}"',
                      "max_power_kw = 22.0", "[assets.ocpp]", f'charge_point_id = "CP{g}_{i}"',
                      f'password = "{PASSWORD}"', f'version = "{"1.6" if i % 2 == 0 else "2.0.1"}"']
    for i, port in enumerate(battery_ports):
        lines += ["[[assets]]", f'asset_id = "ast_bat_{i}"', 'kind = "battery"', 'gateway_id = "modbus-2"',
                  "max_power_kw = 100.0", "[assets.modbus]", 'host = "127.0.0.1"', f"port = {port}"]
    return "\n".join(lines) + "\n"


def test_two_ocpp_gateways_share_two_simulator_processes(broker, events, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text(site_toml([free_port(), free_port()], [free_port(), free_port()]))
    procs = ServiceProcesses(broker.host, broker.port, site, tmp_path / "logs")
    try:
        gateways = [procs.start_gateway("ocpp-1", "ocpp"), procs.start_gateway("ocpp-2", "ocpp"),
                    procs.start_gateway("modbus-2", "modbus")]
        assert gateways == ["gateway-ocpp-1", "gateway-ocpp-2", "gateway-modbus-2"]
        procs.start_simulator("battery-simulator", "modbus-2", "--gateway-id", "modbus-2")
        procs.wait_online(*gateways, timeout=30)
        for k in range(2):
            procs.start_simulator("chargepoint-simulator", str(k), "--gateway-id", "ocpp-1", "--gateway-id", "ocpp-2",
                                  "--part", f"{k}/2", "--no-control")
        chargers = {f"ast_cp_{g}_{i}" for g in (1, 2) for i in range(3)}
        wanted = chargers | {"ast_bat_0", "ast_bat_1"}
        events.wait_for(lambda evs: wanted <= {e.payload["asset_id"] for e in evs
                                               if e.event_type.value == "DEVICE_LINK_UP"},
                        timeout=60, what="every charger and battery linked up")
        # each charger once: the two processes split the chargers, they do not both run them
        ups = [e.payload["asset_id"] for e in events.of("DEVICE_LINK_UP") if e.payload["asset_id"] in chargers]
        assert sorted(ups) == sorted(chargers)
        assert all(procs.alive(name) for name in procs.procs)
    finally:
        procs.stop_all()
