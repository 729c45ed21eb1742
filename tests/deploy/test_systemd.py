"""deploy/systemd: units systemd accepts, each running a console script of this project with its
own identity, its credential handed over by systemd, and the hardening a security officer expects."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "deploy" / "systemd"
SCRIPTS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
             "CapabilityBoundingSet": "", "Restart": "always", "UMask": "0077"}
SERVICES = sorted(UNITS.glob("*.service"))


def parse(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value): keys repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"{path.name}:{number}: not a key=value in a section: {raw!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def test_there_is_a_unit_per_service_and_a_target() -> None:
    names = {p.name for p in SERVICES}
    assert {"qubit-ingester.service", "qubit-planner.service", "qubit-tracker.service",
            "qubit-ocpp-gateway@.service", "qubit-modbus-gateway@.service"} <= names
    target = parse(UNITS / "qubit.target")
    assert values(target["Install"], "WantedBy") == ["multi-user.target"]


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_unit_runs_a_console_script_as_its_own_identity_hardened(unit: Path) -> None:
    service = parse(unit)["Service"]
    (exec_start,) = values(service, "ExecStart")
    binary = Path(exec_start.split()[0])
    assert binary.parent == Path("/opt/qubit/bin") and binary.name in SCRIPTS, exec_start
    environment = dict(v.split("=", 1) for v in values(service, "Environment"))
    identity = environment["QUBIT_MQTT_USERNAME"]
    assert identity == ("gateway-%i" if unit.name.endswith("@.service") else unit.name.removeprefix("qubit-")
                        .removesuffix(".service"))
    # The password: a credential systemd reads as root and hands over, never the environment.
    assert values(service, "LoadCredential") == [f"mqtt_password:/etc/qubit/secrets/clients/{identity}.password"]
    assert environment["QUBIT_MQTT_PASSWORD_FILE"] == "%d/mqtt_password"
    assert not any(k.startswith("QUBIT_MQTT_PASSWORD=") for k in values(service, "Environment"))
    assert environment["QUBIT_DATA_DIR"] == f"%S/qubit/{identity}"
    assert values(service, "StateDirectory") == [f"qubit/{identity}"]
    assert values(service, "EnvironmentFile") == ["/etc/qubit/qubit.env"]
    for key, expected in HARDENING.items():
        assert values(service, key) == [expected], f"{unit.name}: {key}"
    assert values(parse(unit)["Install"], "WantedBy") == ["qubit.target"]


def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path) -> None:
    """With the binaries pointed at this checkout's venv, since /opt/qubit does not exist here."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (the units were checked by parsing only)")
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "qubit-planner").exists():
        pytest.skip(f"no console scripts in {venv_bin} (pip install -e . first)")
    paths = []
    for unit in [*SERVICES, UNITS / "qubit.target"]:
        name = unit.name.replace("@.service", "@site1.service")  # a template is verified as an instance
        text = unit.read_text().replace("/opt/qubit/bin/", f"{venv_bin}/")
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True, timeout=60)
    # A bad setting is only a warning on stderr ("Failed to parse ..., ignoring"): none is accepted.
    problems = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0 and not problems, done.stderr
