"""The demo's and the benchmark's free-port check: a port is taken by a listener, not by closed connections."""

from __future__ import annotations

import socket

from gateway.demo.ports import port_is_free


def _listener() -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    return server


def test_a_port_with_a_listener_is_not_free() -> None:
    with _listener() as server:
        assert not port_is_free(server.getsockname()[1])


def test_connections_left_in_time_wait_do_not_make_the_port_taken() -> None:
    # The side that closes first keeps TIME_WAIT: here the server's end, on the server's port (a rerun of
    # `wasl demo` right after the last one found its ports "in use" because of exactly this).
    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()
    client.recv(1)  # the server's FIN has arrived
    client.close()
    server.close()
    assert port_is_free(port)
