"""The test harness's assigned ports: a service that must be known before it starts gets a port
that no port-0 bind or outgoing connection can take meanwhile (outside the kernel's ephemeral
range), that nobody listens on, and that this process does not hand out twice."""

from __future__ import annotations

import socket
from contextlib import closing

from tests.harness import _ephemeral_ports, free_port


def test_assigned_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    ephemeral = _ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert not any(port in ephemeral for port in ports)
    for port in ports[:5]:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.bind(("127.0.0.1", port))  # nobody holds it


def test_a_port_somebody_listens_on_is_not_assigned() -> None:
    first = free_port()
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as taken:
        taken.bind(("127.0.0.1", first + 1))
        taken.listen()
        assert free_port() != first + 1
