"""Every MQTT topic of the runtime, in one place. Services build topics only from here.

Documented for integrators in docs/wire-contract.md (QoS, retain, publisher, subscriber).

Every topic starts with ``ROOT``, the site's topic root: ``QUBIT_TOPIC_ROOT`` of the process's
environment, read once, at import (default ``qubit``). The root is a deployment constant of a
process, like its broker address, so every constant and function here keeps its name and
meaning; several sites share one broker by giving each its own root (docs/settings.md). A
tool that talks to another site's tree runs as a process of that site, or builds its topics
with ``under(root, topic)``.

    >>> event_topic("COMMAND_FAILED", "ast_bay_1").removeprefix(ROOT)
    '/events/COMMAND_FAILED/ast_bay_1'
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

DEFAULT_ROOT = "qubit"
ROOT_VARIABLE = "QUBIT_TOPIC_ROOT"
_LEVEL = re.compile(r"^[^/#+\x00]{1,128}$")
MAX_ROOT_CHARS = 200


def check_level(value: str) -> str:
    """Refuse ids that would break the topic tree (``/``, wildcards, NUL, empty)."""
    if not _LEVEL.match(value):
        raise ValueError(f"{value!r} cannot be used in an MQTT topic level")
    return value


def check_root(value: str) -> str:
    """A topic root: one or more topic levels (``depot_north``, ``acme/depot_north``), no
    wildcard, no empty level, not ``$``-reserved; ValueError otherwise.

        >>> check_root("acme/depot_north")
        'acme/depot_north'
    """
    levels = value.split("/")
    if (not value or len(value) > MAX_ROOT_CHARS or value.startswith("$")
            or not all(_LEVEL.match(level) and level.strip() == level for level in levels)):
        raise ValueError(f"must be one or more topic levels separated by '/', at most {MAX_ROOT_CHARS} "
                         "characters, without '+', '#', NUL, empty levels, surrounding spaces or a leading '$'")
    return value


def _root_of_this_process() -> str:
    raw = os.environ.get(ROOT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_ROOT
    try:
        return check_root(raw)
    except ValueError as exc:
        # The settings' way of saying so (runtime/settings.py): one line, exit status 2, no traceback.
        print(f"{ROOT_VARIABLE}={raw!r}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


ROOT = _root_of_this_process()
"""This process's topic root (``QUBIT_TOPIC_ROOT``, default ``qubit``)."""


def under(root: str, topic: str) -> str:
    """``topic`` of this process's tree moved to another site's root: for tests and tools
    that watch several sites at once.

        >>> under("depot_b", f"{ROOT}/events/#")
        'depot_b/events/#'
    """
    if not topic.startswith(ROOT + "/"):
        raise ValueError(f"{topic!r} is not under the topic root {ROOT!r}")
    return f"{check_root(root)}/{topic[len(ROOT) + 1:]}"


def relative(topic: str) -> list[str] | None:
    """The levels of ``topic`` under this process's root, None for a topic outside it.

        >>> relative(f"{ROOT}/status/loopback/ast_1")
        ['status', 'loopback', 'ast_1']
    """
    return topic[len(ROOT) + 1:].split("/") if topic.startswith(ROOT + "/") else None


def client_id(service: str) -> str:
    """The MQTT client id of a process: ``qubit-{service}`` under the default root, and the
    root's levels joined in front otherwise, so two sites on one broker never share a session."""
    if ROOT == DEFAULT_ROOT:
        return f"qubit-{service}"
    return f"qubit-{ROOT.replace('/', '.')}-{service}"


SCHEDULES_IN = f"{ROOT}/schedules/in"
"""Layer 3 publishes schedules here (QoS 1)."""
SCHEDULES_ACCEPTED = f"{ROOT}/schedules/accepted"
"""The ingester republishes each validated schedule, with id and version (QoS 1)."""

EVENTS_ALL = f"{ROOT}/events/#"
SITE = "site"
"""Asset level of an event topic for events about no single asset (schedules)."""

SCHEDULE_REJECTIONS = f"{ROOT}/events/SCHEDULE_REJECTED/+"
"""Every refused schedule: the planner records the ingester's refusals in its ledger."""

QUERY_REQUESTS = f"{ROOT}/query/requests"
"""Operators ask here: asset states are the tracker's to answer, commands and schedules the
planner's (from its ledger); the answer goes to the request's reply_to topic."""

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
TELEMETRY_ALL = f"{ROOT}/telemetry/+/+"


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


OPERATOR_COMMANDS = f"{ROOT}/operator/commands"
"""Operator -> planner: start/stop a session, availability, reset, power limit, SOC target
(OperatorCommand). Only the operator role may publish here (tools/bus_access.py)."""


def simulator_topic(gateway_id: str) -> str:
    """Tests and the demo -> a simulated gateway: force a device into a state (a fault, say)."""
    return f"{ROOT}/sim/{check_level(gateway_id)}"


def query_reply_topic(client_id: str) -> str:
    return f"{ROOT}/query/replies/{check_level(client_id)}"


JSON = "json"
"""The JSON mirror's tree: ``{root}/json/{the msgpack topic's levels after the root}``."""


def json_topic(topic: str) -> str:
    """The JSON mirror's copy of a msgpack topic (or filter) of this site.

        >>> json_topic(f"{ROOT}/events/COMMAND_FAILED/ast_bay_1").removeprefix(ROOT)
        '/json/events/COMMAND_FAILED/ast_bay_1'
    """
    if not topic.startswith(ROOT + "/"):
        raise ValueError(f"{topic!r} is not under the topic root {ROOT!r}")
    return f"{ROOT}/{JSON}/{topic[len(ROOT) + 1:]}"


def last_level(topic: str) -> str:
    return topic.rsplit("/", 1)[-1]


# ------------------------------------------------------------------------- the topic tree


@dataclass(frozen=True, slots=True)
class Channel:
    """One topic (or family of topics) of the tree, as integrators need to know it.

    ``address`` names its variable levels in braces; ``messages`` are model names of
    ``coordinator.contract`` (``"event"``: every event type, one message each). The
    AsyncAPI document in docs/contract/ is generated from this table. Addresses are under
    this process's topic root (``ROOT``).
    """

    name: str
    address: str
    messages: tuple[str, ...]
    qos: int
    retain: bool
    publishers: tuple[str, ...]
    subscribers: tuple[str, ...]
    description: str
    content_type: str = "application/msgpack"
    """``application/json`` for the JSON mirror's tree (the same models, JSON-encoded)."""


EVERY_SERVICE = "every service"

CHANNELS: tuple[Channel, ...] = (
    Channel("schedulesIn", SCHEDULES_IN, ("Schedule",), 1, False, ("Layer 3 optimizer", "qubit publish"),
            ("ingester",), "Layer 3 schedules, checked by the ingester."),
    Channel("schedulesAccepted", SCHEDULES_ACCEPTED, ("AcceptedSchedule",), 1, False, ("ingester",), ("planner",),
            "Each schedule that passed every check, with its id and version."),
    Channel("commands", f"{ROOT}/commands/{{gateway_id}}", ("CommandBatch",), 1, False, ("planner",),
            ("that gateway",), "Every command due for one gateway at one planner tick."),
    Channel("results", f"{ROOT}/results/{{gateway_id}}", ("ResultBatch",), 1, False, ("gateway",), ("planner",),
            "What became of each command: acknowledged, completed, failed (retry may help), refused."),
    Channel("status", f"{ROOT}/status/{{gateway_id}}/{{asset_id}}", ("StatusReport",), 1, False, ("gateway",),
            ("tracker",), "The state a device reports, in the asset machine's words."),
    Channel("telemetry", f"{ROOT}/telemetry/{{gateway_id}}/{{asset_id}}", ("Telemetry",), 0, False, ("gateway",),
            ("anyone",), "Measurements; QoS 0, the next reading replaces a lost one."),
    Channel("assetState", f"{ROOT}/state/{{asset_id}}", ("AssetStateMessage",), 1, True, ("tracker",),
            ("planner", "SCADA", "qubit states"), "An asset's current state, retained for late subscribers."),
    Channel("events", f"{ROOT}/events/{{event_type}}/{{asset_id_or_site}}", ("event",), 1, False, (EVERY_SERVICE,),
            ("SCADA", "tracker", "qubit events"),
            f"Every event; the last level is the asset's id, or '{SITE}' for events about no single asset."),
    Channel("serviceStatus", f"{ROOT}/services/{{service}}/status", ("ServiceStatus",), 1, True,
            (EVERY_SERVICE + " (and its Last Will)",), ("monitoring", "qubit services"),
            "Each process's module state and why, retained; the Last Will says offline."),
    Channel("emergencyStop", EMERGENCY_STOP, ("EmergencyStop",), 1, True, ("operator", "qubit estop"),
            (EVERY_SERVICE,),
            "The site's emergency stop and its explicit reset, retained, handled ahead of any backlog."),
    Channel("operatorCommands", OPERATOR_COMMANDS, ("OperatorCommand",), 1, False, ("operator", "qubit command"),
            ("planner",),
            "An operator's command for one asset; the planner answers OPERATOR_COMMAND_ACCEPTED (then the "
            "command's COMMAND_* events) or OPERATOR_COMMAND_REJECTED."),
    Channel("queryRequests", QUERY_REQUESTS, ("Query",), 1, False, ("qubit status",), ("tracker",),
            "Questions to the state tracker."),
    Channel("queryReplies", f"{ROOT}/query/replies/{{client_id}}", ("QueryReply",), 1, False, ("tracker",),
            ("the asking client",), "The tracker's answer, on the request's reply_to topic."),
    Channel("simulator", f"{ROOT}/sim/{{gateway_id}}", ("StatusReport", "SimulatorRequest", "ChargerControl"), 1, False,
            ("tests", "demo"), ("simulated gateways", "the charge point simulator"),
            "Force a simulated device into a state (StatusReport), make it stop answering or answer again "
            "(SimulatorRequest), or drive a simulated charger (ChargerControl)."),
    *(Channel(f"json{name[0].upper()}{name[1:]}", f"{ROOT}/{JSON}/{address.removeprefix(ROOT + '/')}", messages, qos,
              retain, ("json-mirror",), ("SCADA (JSON)",),
              f"The JSON mirror's copy of {name} (opt-in, services/json_mirror.py): the same fields, "
              "timestamps as RFC 3339 strings in UTC.", "application/json")
      for name, address, messages, qos, retain in (
          ("events", f"{ROOT}/events/{{event_type}}/{{asset_id_or_site}}", ("event",), 1, False),
          ("assetState", f"{ROOT}/state/{{asset_id}}", ("AssetStateMessage",), 1, True),
          ("serviceStatus", f"{ROOT}/services/{{service}}/status", ("ServiceStatus",), 1, True),
          ("telemetry", f"{ROOT}/telemetry/{{gateway_id}}/{{asset_id}}", ("Telemetry",), 0, False),
      )),
)
"""Every topic of the runtime (docs/wire-contract.md, docs/contract/asyncapi.json)."""
