"""Every MQTT topic of the runtime, in one place. Services build topics only from here.

Documented for integrators in docs/wire-contract.md (QoS, retain, publisher, subscriber).

    >>> event_topic("COMMAND_FAILED", "ast_bay_1")
    'qubit/events/COMMAND_FAILED/ast_bay_1'
"""

from __future__ import annotations

import re

ROOT = "qubit"

SCHEDULES_IN = f"{ROOT}/schedules/in"
"""Layer 3 publishes schedules here (QoS 1)."""
SCHEDULES_ACCEPTED = f"{ROOT}/schedules/accepted"
"""The ingester republishes each validated schedule, with id and version (QoS 1)."""

EVENTS_ALL = f"{ROOT}/events/#"
SITE = "site"
"""Asset level of an event topic for events about no single asset (schedules)."""

QUERY_REQUESTS = f"{ROOT}/query/requests"
"""Operators ask the state tracker here; the answer goes to the request's reply_to topic."""

_LEVEL = re.compile(r"^[^/#+\x00]{1,128}$")


def check_level(value: str) -> str:
    """Refuse ids that would break the topic tree (``/``, wildcards, NUL, empty)."""
    if not _LEVEL.match(value):
        raise ValueError(f"{value!r} cannot be used in an MQTT topic level")
    return value


def event_topic(event_type: str, asset_id: str | None = None) -> str:
    """``qubit/events/{EVENT_TYPE}/{asset_id|site}``: filter by type, asset, or both."""
    return f"{ROOT}/events/{check_level(event_type)}/{check_level(asset_id) if asset_id else SITE}"


def commands_topic(gateway_id: str) -> str:
    """Planner -> gateway: batches of due commands (QoS 1)."""
    return f"{ROOT}/commands/{check_level(gateway_id)}"


def results_topic(gateway_id: str) -> str:
    """Gateway -> planner: batches of command results (QoS 1)."""
    return f"{ROOT}/results/{check_level(gateway_id)}"


RESULTS_ALL = f"{ROOT}/results/+"


def status_topic(gateway_id: str, asset_id: str) -> str:
    """Gateway -> tracker: what a device reports about itself (QoS 1)."""
    return f"{ROOT}/status/{check_level(gateway_id)}/{check_level(asset_id)}"


STATUS_ALL = f"{ROOT}/status/+/+"


def telemetry_topic(gateway_id: str, asset_id: str) -> str:
    """Gateway -> anyone: measurements (QoS 0: the next reading replaces a lost one)."""
    return f"{ROOT}/telemetry/{check_level(gateway_id)}/{check_level(asset_id)}"


def asset_state_topic(asset_id: str) -> str:
    """Tracker -> anyone: the asset's current state, retained so late subscribers see it at once."""
    return f"{ROOT}/state/{check_level(asset_id)}"


ASSET_STATES_ALL = f"{ROOT}/state/+"


def service_topic(service: str) -> str:
    """Each process: retained online/offline status; the Last Will sets offline."""
    return f"{ROOT}/services/{check_level(service)}/status"


SERVICES_ALL = f"{ROOT}/services/+/status"


EMERGENCY_STOP = f"{ROOT}/control/emergency_stop"
"""Operator -> every process, retained: the site's emergency stop and its reset (EmergencyStop)."""


def simulator_topic(gateway_id: str) -> str:
    """Tests and the demo -> a simulated gateway: force a device into a state (a fault, say)."""
    return f"{ROOT}/sim/{check_level(gateway_id)}"


def query_reply_topic(client_id: str) -> str:
    return f"{ROOT}/query/replies/{check_level(client_id)}"


def last_level(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]
