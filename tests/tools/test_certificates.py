"""A certificate the site CA issues is trusted by a client holding only the CA file."""

from __future__ import annotations

import contextlib
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.certificates import IssuedCertificate, LocalCA


@contextlib.contextmanager
def tls_server(issued: IssuedCertificate) -> Iterator[int]:
    """A one-connection TLS server on loopback with ``issued``; yields its port. It answers
    ``ok`` after a handshake, and lets a failed handshake go (the client's side is under test)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(issued.cert, issued.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve)
        thread.start()
        yield listener.getsockname()[1]
        thread.join(5)


def client(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def test_a_client_trusting_the_site_ca_completes_a_handshake_with_an_issued_server_certificate(tmp_path):
    ca = LocalCA.create(tmp_path, "sit_test")
    issued = ca.issue(tmp_path / "broker", "broker", hostnames=["localhost", "127.0.0.1"])
    with tls_server(issued) as port, socket.create_connection(("127.0.0.1", port)) as raw, \
            client(ca.cert).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.recv(2) == b"ok"


def test_a_certificate_from_another_ca_is_refused(tmp_path):
    ours = LocalCA.create(tmp_path / "ours", "sit_a")
    theirs = LocalCA.create(tmp_path / "theirs", "sit_b")
    issued = theirs.issue(tmp_path / "srv", "broker", hostnames=["127.0.0.1"])
    with tls_server(issued) as port, socket.create_connection(("127.0.0.1", port)) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        client(ours.cert).wrap_socket(raw, server_hostname="127.0.0.1")


def test_keys_are_readable_by_their_owner_only_and_the_ca_is_reused(tmp_path):
    ca = LocalCA.create(tmp_path, "sit_test")
    issued = ca.issue(tmp_path / "ocpp", "ocpp", hostnames=["localhost"])
    for key in (ca.key, issued.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = ca.cert.read_bytes()
    assert LocalCA.create(tmp_path, "sit_test").cert.read_bytes() == before
