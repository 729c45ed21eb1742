"""A site's credentials in the layout of ``qubit-credentials --out DIR`` (docs/security.md).

The real command (tools/credentials.py) is used whenever it exists; until it does, this
stand-in writes the same layout for the compose check only: CA and broker certificate
(tools/certificates.py), mosquitto_passwd's password file, an ACL of the shared interface,
one password file per identity. Nothing here is used by a deployment.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from coordinator.site import SiteConfig
from tools.certificates import LocalCA

ROLES = ("layer3", "scada", "operator", "simulator", "health")
COMMON_RIGHTS = ("topic write qubit/events/#", "topic read qubit/control/emergency_stop")


def real_command_exists() -> bool:
    return importlib.util.find_spec("tools.credentials") is not None


def generate(site_file: Path, out: Path, hostnames: Sequence[str] = ("localhost", "127.0.0.1")) -> None:
    """The credentials of ``site_file`` in ``out`` (the real command if there is one)."""
    if real_command_exists():
        subprocess.run([sys.executable, "-m", "tools.credentials", "--site-config", str(site_file), "--out", str(out),
                        "--hostname", ",".join(hostnames)], check=True, capture_output=True)
        return
    site = SiteConfig.load(site_file)
    gateways = [g.gateway_id for g in site.gateways]
    identities = ["ingester", "planner", "tracker", *(f"gateway-{g}" for g in gateways), *ROLES]
    ca = LocalCA.create(out, site.site_id)
    ca.issue(out / "broker", "broker", hostnames)
    shutil.copy(ca.cert, out / "broker" / "ca.crt")
    clients = out / "clients"
    clients.mkdir(parents=True, exist_ok=True)
    passwords = out / "broker" / "passwords"
    passwords.touch(0o600)
    for identity in identities:
        path = clients / f"{identity}.password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24))
        # -b takes the password as an argument: tolerable for a throwaway test site only
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), identity, path.read_text()], check=True)
    (out / "broker" / "acl").write_text(acl(gateways))


def acl(gateways: Sequence[str]) -> str:
    """The shared interface's ACL for a site with ``gateways`` (docs/security.md)."""
    blocks: dict[str, list[str]] = {
        "ingester": ["topic read qubit/schedules/in", "topic write qubit/schedules/accepted"],
        "planner": ["topic read qubit/schedules/accepted", "topic read qubit/results/+", "topic read qubit/state/+",
                    "topic read qubit/events/SCHEDULE_REJECTED/+", "topic write qubit/commands/+",
                    "topic read qubit/query/requests", "topic write qubit/query/replies/+"],
        "tracker": ["topic read qubit/status/+/+", "topic readwrite qubit/state/+",
                    "topic read qubit/query/requests", "topic write qubit/query/replies/+"],
    }
    for g in gateways:
        blocks[f"gateway-{g}"] = [f"topic read qubit/commands/{g}", f"topic read qubit/sim/{g}",
                                  f"topic write qubit/results/{g}", f"topic write qubit/status/{g}/+",
                                  f"topic write qubit/telemetry/{g}/+"]
    for service, rights in blocks.items():
        rights += [f"topic readwrite qubit/services/{service}/status", *COMMON_RIGHTS]
    reads = ["qubit/events/#", "qubit/state/#", "qubit/services/#", "qubit/telemetry/#"]
    blocks["layer3"] = ["topic write qubit/schedules/in", "topic read qubit/events/#"]
    blocks["scada"] = [f"topic read {t}" for t in reads]
    blocks["operator"] = [*(f"topic read {t}" for t in reads), "topic write qubit/control/emergency_stop",
                          "topic write qubit/operator/#", "topic write qubit/query/requests",
                          "topic read qubit/query/replies/#"]
    blocks["simulator"] = ["topic readwrite qubit/sim/#"]
    blocks["health"] = ["topic read $SYS/broker/uptime"]
    return "".join(f"user {user}\n" + "".join(f"{line}\n" for line in rights) + "\n" for user, rights in blocks.items())
