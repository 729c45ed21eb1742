"""The fleet's network cut (tools/fleet/link.py) against a plain TCP echo server: no broker."""

from __future__ import annotations

import socket
import socketserver
import threading

import pytest

from tools.fleet.link import Links


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(1024):
            self.request.sendall(data)


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(1024)


def test_a_severed_link_closes_what_it_carries_and_refuses_until_restored(echo):
    links = Links()
    try:
        link = links.open("127.0.0.1", echo)
        with socket.create_connection((link.host, link.port), timeout=5) as sock:
            assert round_trip(sock, b"hello") == b"hello"
            link.sever()
            assert not link.up
            with pytest.raises(OSError):  # reset by the link, or closed: either way nothing more crosses
                if sock.recv(1024) == b"":
                    raise ConnectionResetError("closed")
        with pytest.raises(OSError):
            socket.create_connection((link.host, link.port), timeout=2)
        link.restore()
        with socket.create_connection((link.host, link.port), timeout=5) as sock:
            assert round_trip(sock, b"again") == b"again"
        assert link.connections == 2
    finally:
        links.close()
