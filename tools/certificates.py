"""A site's local certificate authority and the server certificates it signs.

For development and for sites without a PKI of their own: one CA per site, a certificate
for the broker's TLS listener and one for the OCPP gateway's wss:// endpoint (security
profile 2). Clients trust the CA file, never the server certificates one by one. A site
with its own PKI mounts its own files instead; nothing else reads this module.

    ca = LocalCA.create(Path("secrets"), "sit_demo_depot")
    ca.issue(Path("secrets/broker"), "broker", hostnames=["localhost", "127.0.0.1"])
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"

CA_DAYS = 3650
SERVER_DAYS = 825
"""The longest server certificate lifetime clients such as browsers still accept."""


@dataclass(frozen=True)
class IssuedCertificate:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalCA:
    """A CA whose key is on disk (mode 0600) beside its certificate."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, site_id: str) -> LocalCA:
        """A new CA in ``directory`` (ca.crt, ca.key), or the one already there."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / CA_CERT, directory / CA_KEY
        if cert.exists() and key.exists():
            return cls(cert, key)
        private = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"qubit site CA {site_id}")])
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(private, hashes.SHA256())
        )
        _write_key(key, private)
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key)

    def issue(self, directory: Path, common_name: str, hostnames: Sequence[str]) -> IssuedCertificate:
        """A server certificate for ``hostnames`` (DNS names or IP addresses) in ``directory``."""
        ca_cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.key}: not the EC key this module writes")
        private = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hostnames]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        issued = IssuedCertificate(directory / SERVER_CERT, directory / SERVER_KEY)
        _write_key(issued.key, private)
        issued.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        return issued


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def _write_key(path: Path, private: ec.EllipticCurvePrivateKey) -> None:
    # Created 0600 before a byte is written: the key is never readable by others, even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
