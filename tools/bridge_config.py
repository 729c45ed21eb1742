"""The Mosquitto bridge that joins a site's broker to the fleet's central broker (docs/fleet.md).

The lines go into the site broker's config (``LocalMosquitto(extra_config=...)`` here, the
site's mosquitto.conf in a deployment). The site keeps its own topic root; the bridge moves
its trees under ``fleet/<site_id>/`` on the way out and back on the way in, so that a site
knows nothing of the fleet and its own ACL is unchanged::

    site  qubit/events/COMMAND_COMPLETED/ast_bay_1  ->  central  fleet/sit_a/qubit/events/...
    site  qubit/operator/commands                   <-  central  fleet/sit_a/qubit/operator/commands

    bridge_lines(BridgeLink("sit_a", "127.0.0.1", 8883, password, ca_file=central_ca))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coordinator.contract.topics import ROOT, check_root
from tools.bus_access import BRIDGE_STATE, BRIDGED_IN, BRIDGED_OUT, bridge_identity, fleet_prefix


@dataclass(frozen=True)
class BridgeLink:
    """Where and how one site's bridge reaches the central broker."""

    site_id: str
    host: str
    port: int
    password: str
    """bridge-<site_id>'s password on the central broker (Mosquitto reads it from its config only)."""
    ca_file: Path | None = None
    """The central broker's CA: the bridge then speaks TLS and checks the broker's name against ``host``."""
    root: str = ROOT
    """The site's topic root (QUBIT_TOPIC_ROOT of its processes)."""
    restart_base_s: int = 1
    restart_cap_s: int = 2
    """Reconnect back-off (Mosquitto: jittered between base and cap). Small here, for a quick
    catch-up; a fleet of hundreds wants a larger cap, so that a central restart is not met by
    every bridge at once."""
    keepalive_s: int = 10
    """A silent link (no RST, no FIN) is found dead after 1.5 times this."""


def connection_name(site_id: str) -> str:
    return f"fleet-{site_id}"


def bridge_lines(link: BridgeLink) -> list[str]:
    """The ``connection`` section of one site's bridge.

    Why each setting: QoS 1 both ways and persistent sessions at both ends (cleansession and
    local_cleansession false), so that what either side publishes while the link is down waits
    in the other broker's session, not in memory of a client; with the shipped
    ``max_queued_messages 0`` nothing of that queue is dropped (the default of 1000 drops the
    rest: measured, docs/fleet.md). The notification topic is under the site's own prefix,
    where its identity may write it (the default, $SYS/broker/connection/..., would be denied).
    ``try_private`` tells the central broker it is a bridge (no loops)."""
    root = check_root(link.root)
    prefix = fleet_prefix(link.site_id)
    identity = bridge_identity(link.site_id)
    lines = [
        f"connection {connection_name(link.site_id)}",
        f"address {link.host}:{link.port}",
        "bridge_protocol_version mqttv311",
        f"remote_clientid {identity}",
        f"remote_username {identity}",
        f"remote_password {link.password}",
        f"local_clientid {identity}-local",
        "cleansession false",
        "local_cleansession false",
        "try_private true",
        "start_type automatic",
        f"restart_timeout {link.restart_base_s} {link.restart_cap_s}",
        f"keepalive_interval {link.keepalive_s}",
        "notifications true",
        f"notification_topic {prefix}{BRIDGE_STATE}",
        "bridge_outgoing_retain true",
    ]
    if link.ca_file is not None:
        lines += [f"bridge_cafile {link.ca_file}", "bridge_insecure false", "bridge_tls_version tlsv1.2"]
    lines += [f"topic {t} out 1 {root}/ {prefix}{root}/" for t in BRIDGED_OUT]
    lines += [f"topic {t} in 1 {root}/ {prefix}{root}/" for t in BRIDGED_IN]
    return lines
