"""Charge point simulator: the site's OCPP chargers as real websocket clients, in one process.

Every ev_charger of an OCPP gateway with an ``[assets.ocpp]`` table connects to the CSMS
as ``{url}/{charge_point_id}`` with its configured version (ocpp1.6 / ocpp2.0.1) and
password, boots, reports its status, accepts charging profiles, starts and stops
transactions and sends meter values, as a real charger would. Tests and operators steer it
over MQTT (``qubit/sim/{gateway_id}``): plug in, unplug, fault, reject, drop, disconnect...

``model`` (pure: state, transitions, energy) -> ``points`` (the OCPP words per version) ->
``charger`` (one websocket, reconnects, control) -> ``process`` (CLI, MQTT, signals).
See docs/chargepoint-simulator.md.

    qubit-chargepoint-simulator --site-config deploy/site.toml --gateway-id ocpp
"""

from simulators.chargepoint.charger import ControlAction, SimulatedCharger
from simulators.chargepoint.model import ChargerModel
from simulators.chargepoint.process import ControlListener, chargers_of, default_url, main, parse_control, simulate

__all__ = [
    "ChargerModel",
    "ControlAction",
    "ControlListener",
    "SimulatedCharger",
    "chargers_of",
    "default_url",
    "main",
    "parse_control",
    "simulate",
]
