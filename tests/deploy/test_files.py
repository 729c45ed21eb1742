"""The deployment's files, without Docker: what goes into the build context, what the deployed
broker runs with, and that compose mounts rather than bakes in."""

from __future__ import annotations

import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PATHS_OF_THEIR_OWN = ("listener", "persistence_location", "password_file", "acl_file", "certfile", "keyfile",
                      "cafile", "allow_anonymous", "log_dest", "user")
"""Options each way of running Mosquitto sets for itself (ports, paths, logging)."""


def options(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found.setdefault(key, value.strip())
    return found


def test_the_deployed_broker_keeps_every_data_safety_setting_of_the_shipped_config() -> None:
    shipped = {k: v for k, v in options(REPO / "mosquitto" / "mosquitto.conf").items() if k not in PATHS_OF_THEIR_OWN}
    deployed = options(DEPLOY / "broker" / "mosquitto.conf")
    assert {k: deployed.get(k) for k in shipped} == shipped
    assert deployed["allow_anonymous"] == "false"
    assert "listener" not in deployed  # entrypoint.sh adds both listeners from the environment


def ignored(patterns: list[str], path: str) -> bool:
    # .dockerignore semantics enough for these patterns: a match of the path or of a parent
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(p, pattern.removeprefix("**/")) or fnmatch.fnmatch(p, pattern)
               or fnmatch.fnmatch(p.split("/")[-1], pattern.removeprefix("**/"))
               for pattern in patterns for p in prefixes)


def test_the_build_context_leaves_out_secrets_data_and_tooling() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".venv/bin/python", ".git/HEAD", "deploy/secrets/ca.key", "deploy/site.toml", "data/ledger.sqlite",
                 "shared/coordinator/__pycache__/x.pyc", ".mypy_cache/x", "planner.log", "tests/e2e/test_cli.py"):
        assert ignored(patterns, path), path
    for path in ("pyproject.toml", "README.md", "shared/coordinator/site.py", "services/planner.py", "tools/health.py"):
        assert not ignored(patterns, path), path


def test_the_image_copies_no_site_config_and_compose_mounts_it_read_only() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copies = [line for line in dockerfile.splitlines() if line.startswith("COPY")]
    assert not any("site.toml" in line or "secrets" in line or "mosquitto" in line for line in copies), copies
    compose = (DEPLOY / "compose.yaml").read_text()
    assert '"${QUBIT_SITE_FILE:-./site.toml}:/etc/qubit/site.toml:ro"' in compose
    assert "QUBIT_MQTT_PASSWORD:" not in compose  # passwords are files (compose secrets), never environment
