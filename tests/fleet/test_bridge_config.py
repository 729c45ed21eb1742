"""The fleet's pure parts: the bridge's config lines, the central ACL, the event tally."""

from __future__ import annotations

from pathlib import Path

from coordinator.contract.codec import encode_event
from coordinator.contract.events import EventType, OperatorCommandAccepted
from coordinator.events import Event
from tools.bridge_config import BridgeLink, bridge_lines
from tools.bus_access import acl_text, bridge_access, central_identities, central_topic, fleet_scada_access
from tools.fleet import tally
from tools.fleet.observer import Seen


def test_bridge_lines_move_the_site_tree_under_its_prefix_and_keep_queued_messages():
    lines = bridge_lines(BridgeLink("sit_a", "127.0.0.1", 8883, "secret", ca_file=Path("/ca.crt")))
    assert lines[0] == "connection fleet-sit_a"
    for line in ("address 127.0.0.1:8883", "remote_username bridge-sit_a", "remote_clientid bridge-sit_a",
                 "remote_password secret", "cleansession false", "local_cleansession false",
                 "notification_topic fleet/sit_a/bridge/state", "bridge_cafile /ca.crt", "bridge_insecure false"):
        assert line in lines
    topics = [line for line in lines if line.startswith("topic ")]
    assert topics == ["topic events/# out 1 qubit/ fleet/sit_a/qubit/", "topic state/# out 1 qubit/ fleet/sit_a/qubit/",
                      "topic services/# out 1 qubit/ fleet/sit_a/qubit/",
                      "topic telemetry/# out 1 qubit/ fleet/sit_a/qubit/",
                      "topic operator/commands in 1 qubit/ fleet/sit_a/qubit/"]


def test_a_plain_bridge_has_no_tls_lines_and_a_site_root_is_kept():
    lines = bridge_lines(BridgeLink("sit_b", "10.0.0.1", 1883, "pw", root="acme/north"))
    assert not [line for line in lines if line.startswith("bridge_cafile")]
    assert "topic operator/commands in 1 acme/north/ fleet/sit_b/acme/north/" in lines


def test_a_bridge_identity_writes_and_reads_its_own_site_only():
    access = bridge_access("sit_a")
    assert all(t.startswith("fleet/sit_a/") for t in (*access.publish, *access.read))
    assert access.read == ("fleet/sit_a/qubit/operator/commands",)
    assert "fleet/sit_a/qubit/operator/commands" not in access.publish  # a site cannot command itself centrally


def test_fleet_scada_reads_every_site_and_commands_any():
    scada = fleet_scada_access()
    assert scada.publish == ("fleet/+/qubit/operator/commands",)
    assert "fleet/+/qubit/events/#" in scada.read and "fleet/+/bridge/state" in scada.read
    text = acl_text(central_identities(["sit_b", "sit_a"]))
    assert text.index("user bridge-sit_a") < text.index("user bridge-sit_b") < text.index("user fleet-scada")
    assert "topic write fleet/sit_a/qubit/events/#" in text
    assert "harness" not in text


def test_site_of_a_central_topic():
    assert tally.site_of(central_topic("sit_a", "qubit/events/X/site")) == "sit_a"
    assert tally.site_of("qubit/events/X/site") is None
    assert tally.is_event_topic("fleet/sit_a/qubit/events/X/site") and tally.is_event_topic("qubit/events/X/y")
    assert not tally.is_event_topic("fleet/sit_a/qubit/state/ast_1")


def test_events_are_decoded_with_their_site_and_junk_is_skipped():
    event = Event(EventType.OPERATOR_COMMAND_ACCEPTED,
                  OperatorCommandAccepted(asset_id="ast_1", request_id="req_1", command_id="cmd_1", action="reset"))
    seen = [Seen("fleet/sit_a/qubit/events/OPERATOR_COMMAND_ACCEPTED/ast_1", encode_event(event), False, 1.0),
            Seen("fleet/sit_a/qubit/events/X/site", b"junk", False, 2.0),
            Seen("fleet/sit_a/qubit/state/ast_1", encode_event(event), True, 3.0)]
    got = tally.events(seen)
    assert [(r.site_id, r.event.event_id, r.at) for r in got] == [("sit_a", event.event_id, 1.0)]


def test_compare_counts_lost_and_twice_delivered_ids():
    result = tally.compare(["e1", "e2", "e3", "e2"], ["e1", "e3", "e3", "e9"])
    assert result.expected == 3 and result.lost == ("e2",) and result.duplicated == ("e3",)
    assert not result.complete
    assert tally.compare(["e1"], ["e1", "e1"]).complete
