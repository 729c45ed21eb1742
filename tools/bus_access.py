"""Who may publish and read what on the site's bus: every identity, its topics, the ACL text.

One identity per process (the MQTT username is the name the process already uses in
``qubit/services/<name>/status``) and one per role of the people and systems around the
site. Everything not granted here is denied: Mosquitto drops a publish the ACL does not
allow (MQTT 3.1.1 cannot tell the sender) and never delivers what a client may not read.

    >>> acl_text(identities(["loopback"]))            # doctest: +SKIP
    'user ingester\\ntopic read qubit/schedules/in\\n...'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coordinator.contract.topics import ROOT, check_level

SERVICES = ("ingester", "planner", "tracker")
JSON_MIRROR = "json-mirror"
"""The opt-in JSON mirror (services/json_mirror.py): reads what SCADA reads, writes {root}/json/#."""
ROLES = ("layer3", "scada", "operator", "simulator", "health")
HARNESS = "harness"
"""Test brokers only: readwrite on everything, for tests that play a stolen identity."""


@dataclass(frozen=True)
class Access:
    """One identity's rights: topic filters it may publish to, and may read."""

    identity: str
    publish: tuple[str, ...] = ()
    read: tuple[str, ...] = ()
    role: str = ""
    """What the identity is, for people (docs/security.md, the credentials command)."""


def gateway_identity(gateway_id: str) -> str:
    """``gateway-<gateway_id>``: the username of that gateway's process."""
    return f"gateway-{check_level(gateway_id)}"


_MIRRORED = (f"{ROOT}/events/#", f"{ROOT}/state/#", f"{ROOT}/services/#", f"{ROOT}/telemetry/#")
"""The read-only trees SCADA reads, in msgpack; the JSON mirror copies them under {root}/json/."""
_SCADA_READS = (*_MIRRORED, f"{ROOT}/json/#")


def _service(identity: str, publish: tuple[str, ...], read: tuple[str, ...], role: str) -> Access:
    """What every service may do besides its own topics: its retained status (its container's
    healthcheck reads it back), events, and hearing the emergency stop."""
    status = f"{ROOT}/services/{identity}/status"
    return Access(identity, publish=(status, f"{ROOT}/events/#", *publish),
                  read=(status, f"{ROOT}/control/emergency_stop", *read), role=role)


def service_access() -> list[Access]:
    """The ingester, the planner, the tracker and the JSON mirror."""
    return [
        _service("ingester", (f"{ROOT}/schedules/accepted",), (f"{ROOT}/schedules/in",),
                 "checks Layer 3 schedules"),
        _service("planner", (f"{ROOT}/commands/+", f"{ROOT}/query/replies/+"),
                 (f"{ROOT}/schedules/accepted", f"{ROOT}/results/+", f"{ROOT}/state/+",
                  f"{ROOT}/events/SCHEDULE_REJECTED/+", f"{ROOT}/query/requests",
                  f"{ROOT}/operator/commands"),
                 "plans and dispatches commands"),
        _service("tracker", (f"{ROOT}/state/+", f"{ROOT}/query/replies/+"),
                 (f"{ROOT}/status/+/+", f"{ROOT}/state/+", f"{ROOT}/query/requests"),
                 "tracks asset states"),
        _service(JSON_MIRROR, (f"{ROOT}/json/#",), _MIRRORED,
                 "republishes what SCADA reads as JSON (opt-in)"),
    ]


def gateway_access(gateway_id: str) -> Access:
    """One gateway: its own commands and simulator controls in, its own results, status
    reports and telemetry out. Never another gateway's."""
    g = check_level(gateway_id)
    return _service(gateway_identity(g),
                    (f"{ROOT}/results/{g}", f"{ROOT}/status/{g}/+", f"{ROOT}/telemetry/{g}/+"),
                    (f"{ROOT}/commands/{g}", f"{ROOT}/sim/{g}"), f"the {g} gateway")


def role_access() -> list[Access]:
    """The people and systems around the site."""
    return [
        Access("layer3", publish=(f"{ROOT}/schedules/in",), read=(f"{ROOT}/events/#",),
               role="the Layer 3 optimizer: publishes schedules, follows their events"),
        Access("scada", read=_SCADA_READS, role="SCADA and monitoring: read-only"),
        Access("operator",
               publish=(f"{ROOT}/control/emergency_stop", f"{ROOT}/operator/#", f"{ROOT}/query/requests"),
               read=(*_SCADA_READS, f"{ROOT}/query/replies/#"),
               role="the site operator: emergency stop, queries, operator commands"),
        Access("simulator", publish=(f"{ROOT}/sim/#",), read=(f"{ROOT}/sim/#",),
               role="device simulators and the demo's simulated events"),
        Access("health", read=("$SYS/broker/uptime",), role="the broker container's healthcheck"),
    ]


def identities(gateway_ids: Iterable[str], *, harness: bool = False) -> list[Access]:
    """Every identity of a site with these gateways; ``harness`` adds the test-only one."""
    found = [*service_access(), *(gateway_access(g) for g in sorted(set(gateway_ids))), *role_access()]
    if harness:
        found.append(Access(HARNESS, publish=("#",), read=("#",), role="tests only: everything"))
    return found


def acl_text(accesses: Iterable[Access]) -> str:
    """A Mosquitto acl_file granting exactly these rights (and nothing to anyone else)."""
    lines = ["# Written by qubit-credentials (tools/bus_access.py); anything not listed is denied.", ""]
    for access in accesses:
        lines.append(f"user {access.identity}")
        both = [t for t in access.publish if t in access.read]
        lines += [f"topic readwrite {t}" for t in both]
        lines += [f"topic write {t}" for t in access.publish if t not in both]
        lines += [f"topic read {t}" for t in access.read if t not in both]
        lines.append("")
    return "\n".join(lines)


# -- the fleet: site brokers bridged to one central broker (docs/fleet.md) -----------------

FLEET_ROOT = "fleet"
"""The central broker's tree: site ``S``'s topic ``qubit/x`` is ``fleet/S/qubit/x`` there."""
FLEET_SCADA = "fleet-scada"
"""The operations centre on the central broker: reads every site's trees, sends operator commands."""
BRIDGED_OUT = ("events/#", "state/#", "services/#", "telemetry/#")
"""What a site's bridge carries to the central broker, under the site's root: what SCADA reads."""
BRIDGED_IN = ("operator/commands",)
"""What a site's bridge carries from the central broker: that site's operator commands only."""
BRIDGE_STATE = "bridge/state"
"""Under a site's central prefix: the bridge's own notification (retained 1 up, 0 down, its will)."""


def fleet_prefix(site_id: str) -> str:
    """``fleet/<site_id>/``: where a site's tree starts on the central broker (trailing slash,
    as a Mosquitto bridge's remote prefix wants it)."""
    return f"{FLEET_ROOT}/{check_level(site_id)}/"


def central_topic(site_id: str, topic: str) -> str:
    """A site topic (``qubit/events/...``, under any root) as the central broker names it."""
    return fleet_prefix(site_id) + topic


def bridge_identity(site_id: str) -> str:
    """``bridge-<site_id>``: how that site's bridge logs in to the central broker."""
    return f"bridge-{check_level(site_id)}"


def bridge_access(site_id: str, root: str = ROOT) -> Access:
    """One site's bridge on the central broker: it writes that site's outbound trees and its
    own state notification, and reads that site's operator commands. Nothing of another site."""
    prefix = fleet_prefix(site_id)
    return Access(bridge_identity(site_id),
                  publish=(*(f"{prefix}{root}/{t}" for t in BRIDGED_OUT), prefix + BRIDGE_STATE),
                  read=tuple(f"{prefix}{root}/{t}" for t in BRIDGED_IN),
                  role=f"the bridge of site {site_id}")


def fleet_scada_access(root: str = ROOT) -> Access:
    """The operations centre: every site's outbound trees and bridge states, and every site's
    operator commands (the planner of that site checks each one as it checks a local one)."""
    every = f"{FLEET_ROOT}/+/"
    return Access(FLEET_SCADA,
                  publish=tuple(f"{every}{root}/{t}" for t in BRIDGED_IN),
                  read=(*(f"{every}{root}/{t}" for t in BRIDGED_OUT), every + BRIDGE_STATE),
                  role="the fleet's operations centre: reads every site, sends operator commands")


def central_identities(site_ids: Iterable[str], root: str = ROOT, *, harness: bool = False) -> list[Access]:
    """Every identity of the central broker: one bridge per site and the operations centre;
    ``harness`` adds the test-only one."""
    found = [*(bridge_access(s, root) for s in sorted(set(site_ids))), fleet_scada_access(root)]
    if harness:
        found.append(Access(HARNESS, publish=("#",), read=("#",), role="tests only: everything"))
    return found
