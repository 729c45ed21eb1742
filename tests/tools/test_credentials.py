"""qubit-credentials: the layout it writes, its modes, what it never overwrites or prints, the ACL."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.site import SiteConfig
from tools.bus_access import HARNESS, acl_text, gateway_access, identities
from tools.credentials import SiteFacts, acl_for, main

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "deploy" / "site.toml"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def acl_entries(text: str) -> dict[str, set[tuple[str, str]]]:
    """user -> {(access, topic)} of a Mosquitto ACL file."""
    found: dict[str, set[tuple[str, str]]] = {}
    user = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.split(" ", 1)[1]
            found[user] = set()
        elif line.startswith("topic "):
            assert user is not None, f"a topic line applies to everyone: {line}"
            _, access, topic = line.split(" ", 2)
            found[user].add((access, topic))
    return found


@pytest.fixture
def written(tmp_path, capsys):
    out = tmp_path / "secrets"
    assert main(["--site-config", str(SAMPLE), "--out", str(out)]) == 0
    return out, capsys.readouterr().out


def test_the_layout_of_the_shared_interface(written):
    out, _ = written
    for name in ("ca.crt", "ca.key", "broker/server.crt", "broker/server.key", "broker/passwords", "broker/acl",
                 "ocpp/server.crt", "ocpp/server.key", "chargers/CP_BAY_1.password", "chargers/CP_BAY_2.password"):
        assert (out / name).is_file(), name
    clients = {p.name for p in (out / "clients").iterdir()}
    assert clients == {f"{i}.password" for i in ("ingester", "planner", "tracker", "gateway-ocpp", "gateway-modbus",
                                                 "json-mirror", "layer3", "scada", "operator", "simulator", "health")}


def test_secrets_are_private(written):
    out, _ = written
    for path in [*out.glob("clients/*"), *out.glob("chargers/*"), out / "broker" / "passwords",
                 out / "ca.key", out / "broker" / "server.key", out / "ocpp" / "server.key"]:
        assert mode(path) == 0o600, path
    assert mode(out / "clients") == 0o700


def test_the_password_file_holds_a_hash_of_each_password_never_the_password(written):
    out, _ = written
    lines = dict(line.split(":", 1) for line in (out / "broker" / "passwords").read_text().splitlines())
    assert set(lines) == {p.stem for p in (out / "clients").iterdir()}
    for identity, hashed in lines.items():
        password = (out / "clients" / f"{identity}.password").read_text().strip()
        assert len(password) >= 32 and password not in hashed and hashed.startswith("$7$")


def test_a_rerun_keeps_every_password_and_adds_what_is_missing(written, capsys):
    out, _ = written
    before = {p.name: p.read_text() for p in out.glob("*/*.password")}
    ca = (out / "ca.crt").read_bytes()
    (out / "clients" / "scada.password").unlink()  # rotation: delete, re-run
    assert main(["--site-config", str(SAMPLE), "--out", str(out)]) == 0
    after = {p.name: p.read_text() for p in out.glob("*/*.password")}
    assert after.keys() == before.keys()
    assert {n for n in after if after[n] != before[n]} == {"scada.password"}
    assert (out / "ca.crt").read_bytes() == ca
    assert "scada:" in (out / "broker" / "passwords").read_text()


def test_nothing_secret_is_printed(written):
    out, printed = written
    for path in [*out.glob("*/*.password"), out / "ca.key", out / "broker" / "server.key"]:
        secret = path.read_text().strip()
        assert secret not in printed
    assert "QUBIT_MQTT_PASSWORD_FILE=" in printed and "QUBIT_MQTT_PASSWORD=" not in printed
    assert f"QUBIT_MQTT_USERNAME=gateway-ocpp QUBIT_MQTT_PASSWORD_FILE={(out / 'clients').resolve()}" in printed


def test_the_console_script_runs(tmp_path):
    run = subprocess.run([sys.executable, "-m", "tools.credentials", "--site-config", str(SAMPLE), "--out",
                          str(tmp_path / "s"), "--hostname", "broker.depot"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "s" / "broker" / "server.crt").exists()


def test_acl_every_identity_gets_exactly_its_topics():
    site = SiteFacts.of(SiteConfig.load(REPO / "tests" / "sites" / "loopback.toml"))
    acl = acl_entries(acl_for(site))
    assert set(acl) == {"ingester", "planner", "tracker", "json-mirror", "gateway-loopback", "layer3", "scada",
                        "operator", "simulator", "health"}
    own = {("readwrite", "qubit/services/{}/status"), ("write", "qubit/events/#"),
           ("read", "qubit/control/emergency_stop")}

    def service(name: str) -> set[tuple[str, str]]:
        return {(a, t.format(name)) for a, t in own}

    assert acl["ingester"] == service("ingester") | {("write", "qubit/schedules/accepted"),
                                                     ("read", "qubit/schedules/in")}
    assert acl["planner"] == service("planner") | {
        ("write", "qubit/commands/+"), ("write", "qubit/query/replies/+"), ("read", "qubit/schedules/accepted"),
        ("read", "qubit/results/+"), ("read", "qubit/state/+"), ("read", "qubit/events/SCHEDULE_REJECTED/+"),
        ("read", "qubit/query/requests"), ("read", "qubit/operator/commands")}
    assert acl["tracker"] == service("tracker") | {
        ("readwrite", "qubit/state/+"), ("write", "qubit/query/replies/+"), ("read", "qubit/status/+/+"),
        ("read", "qubit/query/requests")}
    assert acl["gateway-loopback"] == service("gateway-loopback") | {
        ("write", "qubit/results/loopback"), ("write", "qubit/status/loopback/+"),
        ("write", "qubit/telemetry/loopback/+"), ("read", "qubit/commands/loopback"), ("read", "qubit/sim/loopback")}
    assert acl["layer3"] == {("write", "qubit/schedules/in"), ("read", "qubit/events/#")}
    msgpack_reads = ("qubit/events/#", "qubit/state/#", "qubit/services/#", "qubit/telemetry/#")
    assert acl["json-mirror"] == {("readwrite", "qubit/services/json-mirror/status"), ("readwrite", "qubit/events/#"),
                                  ("read", "qubit/control/emergency_stop"), ("write", "qubit/json/#"),
                                  *(("read", t) for t in msgpack_reads[1:])}
    scada = {("read", t) for t in (*msgpack_reads, "qubit/json/#")}
    assert acl["scada"] == scada
    assert acl["operator"] == scada | {("write", "qubit/control/emergency_stop"), ("write", "qubit/operator/#"),
                                       ("write", "qubit/query/requests"), ("read", "qubit/query/replies/#")}
    assert acl["simulator"] == {("readwrite", "qubit/sim/#")}
    assert acl["health"] == {("read", "$SYS/broker/uptime")}


def test_acl_has_one_identity_per_gateway_of_the_site_and_no_harness():
    acl = acl_entries(acl_for(SiteFacts.read(SAMPLE)))
    assert {u for u in acl if u.startswith("gateway-")} == {"gateway-ocpp", "gateway-modbus"}
    assert HARNESS not in acl
    assert HARNESS in acl_entries(acl_text(identities(["ocpp"], harness=True)))


def test_a_gateway_id_that_would_break_the_topic_tree_is_refused():
    with pytest.raises(ValueError):
        gateway_access("a/b")
    with pytest.raises(SystemExit, match=r"gateways\.gateway_id"):
        SiteFacts.of_mapping({"site_id": "sit_x", "gateways": [{"gateway_id": "#"}]})


def test_the_shipped_broker_config_is_secured_with_this_layout():
    lines = set((REPO / "mosquitto" / "mosquitto.conf").read_text().splitlines())
    assert {"allow_anonymous false", "per_listener_settings false",
            "password_file /mosquitto/secrets/broker/passwords", "acl_file /mosquitto/secrets/broker/acl",
            "listener 1883 127.0.0.1", "listener 8883", "cafile /mosquitto/secrets/ca.crt",
            "certfile /mosquitto/secrets/broker/server.crt", "keyfile /mosquitto/secrets/broker/server.key"} <= lines
    assert "allow_anonymous true" not in lines and "listener 1883" not in lines
