"""free_port never gives one process the same port twice (a broker's two listeners collided)."""

from __future__ import annotations

import socket

from tools.broker import LISTEN_PORTS, free_port


def test_ports_asked_for_one_after_the_other_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(p in LISTEN_PORTS for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))
