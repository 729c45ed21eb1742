"""The deployment's files, without Docker: what goes into the build context, what the deployed
broker runs with, and that compose mounts rather than bakes in."""

from __future__ import annotations

import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
def test_the_deployed_broker_runs_the_shipped_config() -> None:
    # one broker config for the tests, the demo and the deployment: entrypoint.sh only
    # replaces its listener and file lines
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "../mosquitto/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in compose
    assert not (DEPLOY / "broker" / "mosquitto.conf").exists()


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
