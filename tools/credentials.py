"""`qubit-credentials`: a site's broker identities, passwords, ACL and certificates, in one go.

    qubit-credentials --site-config deploy/site.toml --out deploy/secrets [--hostname broker.site]

writes (docs/security.md "Credentials and certificates")::

    OUT/ca.crt ca.key                        the site's local CA (tools/certificates.py)
    OUT/broker/server.crt server.key         the broker's TLS listener
    OUT/broker/passwords                     Mosquitto's password file, every identity
    OUT/broker/acl                           the ACL: every identity gets exactly its topics,
                                             under the topic root (QUBIT_TOPIC_ROOT, default qubit)
    OUT/clients/<identity>.password          one per identity, mode 0600
    OUT/ocpp/server.crt server.key           the OCPP gateway's wss:// certificate
    OUT/chargers/<charge_point_id>.password  each OCPP charger's Basic-auth password

A password that exists is never replaced: re-running adds what is missing (a new gateway, a
new charger) and rewrites the password file and the ACL from what is there. Rotation: delete
the password file of one identity, re-run, SIGHUP the broker. What it prints names variables
and files, never a password; passwords reach ``mosquitto_passwd`` in a file, never on its
command line (where ``ps`` would show them).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.contract.topics import DEFAULT_ROOT, ROOT, ROOT_VARIABLE, check_level
from tools.bus_access import Access, acl_text, identities
from tools.certificates import CA_CERT, SERVER_CERT, SERVER_KEY, LocalCA

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")
PASSWORD_SUFFIX = ".password"


@dataclass(frozen=True)
class SiteFacts:
    """What the credentials depend on in a site config: read from the TOML itself, so that a
    site whose secrets do not exist yet (the files this command writes) can be read."""

    site_id: str
    gateway_ids: tuple[str, ...]
    charge_point_ids: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path) -> SiteFacts:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"qubit-credentials: cannot read the site config {path}: {exc}") from None
        return cls.of_mapping(data, path)

    @classmethod
    def of_mapping(cls, data: dict[str, Any], path: Path | str = "site config") -> SiteFacts:
        def level(value: Any, what: str) -> str:
            try:
                return check_level(value) if isinstance(value, str) else check_level("")
            except ValueError:
                raise SystemExit(f"qubit-credentials: {path}: {what} must be a non-empty id "
                                 "without '/', '+', '#'") from None

        site_id = level(data.get("site_id"), "site_id")
        gateways = tuple(level(g.get("gateway_id"), "gateways.gateway_id") for g in data.get("gateways", []))
        chargers = tuple(
            level(a["ocpp"].get("charge_point_id"), "assets.ocpp.charge_point_id")
            for a in data.get("assets", []) if isinstance(a.get("ocpp"), dict))
        return cls(site_id, gateways, chargers)

    @classmethod
    def of(cls, site: Any) -> SiteFacts:
        """From a loaded ``coordinator.site.SiteConfig``."""
        chargers = tuple(a.ocpp.charge_point_id for a in site.assets if getattr(a, "ocpp", None) is not None)
        return cls(site.site_id, tuple(g.gateway_id for g in site.gateways), chargers)


def acl_for(site: SiteFacts) -> str:
    """The site's ACL: the services, one identity per gateway of the site, the roles."""
    return acl_text(identities(site.gateway_ids))


@dataclass
class Written:
    """What a run wrote or found, for the summary it prints."""

    out: Path
    accesses: list[Access]
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    chargers: list[str] = field(default_factory=list)

    def client_password(self, identity: str) -> Path:
        return self.out / "clients" / f"{identity}{PASSWORD_SUFFIX}"


def provision(out: Path, site: SiteFacts, *, hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
              harness: bool = False, ocpp: bool = True, accesses: Sequence[Access] | None = None) -> Written:
    """Write (or complete) the credentials layout for ``site`` in ``out``.

    ``harness``: add the test-only identity (tools/broker.py; never for a site).
    ``ocpp``: the OCPP gateway's certificate and the chargers' passwords too.
    ``accesses``: these identities instead of the site's (a fleet's central broker,
    tools/bus_access.py ``central_identities``; ``harness`` is then theirs to include)."""
    out.mkdir(parents=True, exist_ok=True)
    accesses = identities(site.gateway_ids, harness=harness) if accesses is None else list(accesses)
    written = Written(out, accesses)
    ca_existed = (out / CA_CERT).exists()
    ca = LocalCA.create(out, site.site_id)
    (written.kept if ca_existed else written.created).append(ca.cert)
    _server_certificate(ca, out / "broker", "qubit broker", hostnames, written)
    clients = _private_dir(out / "clients")
    for access in accesses:
        _password(clients / f"{access.identity}{PASSWORD_SUFFIX}", written)
    broker = out / "broker"
    write_password_file(broker / "passwords", {a.identity: written.client_password(a.identity) for a in accesses})
    (broker / "acl").write_text(acl_text(accesses))
    if ocpp:
        _ocpp(ca, out, site, hostnames, written)
    return written


def provision_ocpp(out: Path, site: SiteFacts, *, hostnames: Sequence[str] = DEFAULT_HOSTNAMES) -> Written:
    """The OCPP part of the layout alone, written as ``provision`` writes it: the site CA (kept if
    there), ocpp/server.crt and server.key, chargers/<charge_point_id>.password. For a stack whose
    broker provisions its own identities (the demo, tests: tools/broker.py)."""
    out.mkdir(parents=True, exist_ok=True)
    written = Written(out, [])
    ca_existed = (out / CA_CERT).exists()
    ca = LocalCA.create(out, site.site_id)
    (written.kept if ca_existed else written.created).append(ca.cert)
    _ocpp(ca, out, site, hostnames, written)
    return written


def _ocpp(ca: LocalCA, out: Path, site: SiteFacts, hostnames: Sequence[str], written: Written) -> None:
    _server_certificate(ca, out / "ocpp", "qubit ocpp gateway", hostnames, written)
    chargers = _private_dir(out / "chargers")
    for cp_id in site.charge_point_ids:
        _password(chargers / f"{cp_id}{PASSWORD_SUFFIX}", written)
        written.chargers.append(cp_id)


def write_password_file(path: Path, passwords: dict[str, Path]) -> None:
    """Mosquitto's password file for these identities (their password files' content), hashed
    by ``mosquitto_passwd -U`` on a 0600 file of ours, then moved into place in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        plain = Path(scratch) / "passwords"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            for identity, source in passwords.items():
                f.write(f"{identity}:{source.read_text().strip()}\n")
        done = subprocess.run([mosquitto_passwd_binary(), "-U", str(plain)], capture_output=True, text=True)
        if done.returncode != 0:
            # its output names the file, not the passwords
            why = done.stderr.strip() or done.stdout.strip()
            raise SystemExit(f"qubit-credentials: mosquitto_passwd failed: {why}")
        plain.chmod(0o600)  # mosquitto_passwd writes a new file with the umask's mode
        os.replace(plain, path)


def mosquitto_passwd_binary() -> str:
    """``mosquitto_passwd`` beside the broker binary, else on PATH."""
    from tools.broker import mosquitto_binary  # the broker module starts brokers; only its finder is needed

    try:
        beside = Path(mosquitto_binary()).with_name("mosquitto_passwd")
        if beside.exists():
            return str(beside)
    except RuntimeError:
        pass
    found = shutil.which("mosquitto_passwd") or next(
        (p for p in ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd") if os.path.exists(p)), None)
    if found is None:
        raise SystemExit("qubit-credentials: mosquitto_passwd is not installed (Debian: apt-get install mosquitto)")
    return found


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _password(path: Path, written: Written) -> None:
    """A new random password in ``path`` (0600 from its first byte), unless one is there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        written.kept.append(path)
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(24) + "\n")
    written.created.append(path)


def _server_certificate(ca: LocalCA, directory: Path, name: str, hostnames: Sequence[str], written: Written) -> None:
    if (directory / SERVER_CERT).exists() and (directory / SERVER_KEY).exists():
        written.kept.append(directory / SERVER_CERT)
        return
    issued = ca.issue(directory, name, hostnames)
    written.created.append(issued.cert)


def summary(written: Written) -> Iterable[str]:
    """What each client needs: variables and paths, never a password."""
    out = written.out.resolve()
    yield f"credentials in {out} ({len(written.created)} files written, {len(written.kept)} kept as they were)"
    yield ""
    yield "broker (mosquitto/mosquitto.conf): mount"
    yield f"  {out / 'broker'} at /mosquitto/secrets/broker and {out / CA_CERT} at /mosquitto/secrets/ca.crt"
    yield "  after adding or rotating an identity: kill -HUP the broker (it re-reads passwords and acl)"
    yield ""
    yield "clients (environment; TLS on the broker's port 8883):"
    if ROOT != DEFAULT_ROOT:  # the ACL grants this root only: every process of the site must use it
        yield f"  every client: {ROOT_VARIABLE}={ROOT} (the ACL grants topics under {ROOT}/ only)"
    for access in written.accesses:
        yield (f"  {access.identity:<20} QUBIT_MQTT_USERNAME={access.identity} "
               f"QUBIT_MQTT_PASSWORD_FILE={written.client_password(access.identity).resolve()} "
               f"QUBIT_MQTT_CA_FILE={out / CA_CERT}")
        yield f"  {'':<20} {access.role}"
    if written.chargers:
        yield ""
        yield f"OCPP gateway (wss://, security profile 2): tls_cert = {out / 'ocpp' / SERVER_CERT}, "
        yield f"  tls_key = {out / 'ocpp' / SERVER_KEY}; chargers trust {out / CA_CERT}"
        for cp_id in written.chargers:
            yield (f"  charger {cp_id}: Basic-auth password in {out / 'chargers' / (cp_id + PASSWORD_SUFFIX)} "
                   "(password_file in the site config; configure the same on the charger)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qubit-credentials", description=__doc__.split("\n\n")[0],
                                     epilog="Reads no QUBIT_* setting: everything comes from its arguments.")
    parser.add_argument("--site-config", required=True, type=Path, help="the site's TOML file")
    parser.add_argument("--out", required=True, type=Path, help="the directory to write (e.g. deploy/secrets)")
    parser.add_argument("--hostname", action="append", default=None,
                        help="a name or address clients use for the broker and the OCPP gateway (repeat; "
                             "default localhost and 127.0.0.1)")
    args = parser.parse_args(argv)
    site = SiteFacts.read(args.site_config)
    written = provision(args.out, site, hostnames=args.hostname or DEFAULT_HOSTNAMES)
    for line in summary(written):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
