"""Whether a loopback TCP port is free, for the demo runner and the exchange benchmark."""

from __future__ import annotations

import socket


def port_is_free(port: int) -> bool:
    """Return True if a server could listen on ``port`` on 127.0.0.1 right now."""
    with socket.socket() as s:
        # As the servers themselves do (asyncio sets it on Linux): connections of a finished run that linger in
        # TIME_WAIT must not make the port look taken, so `wasl demo` can run again at once; a listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_range(count: int, start: int = 20000, stop: int = 32000, step: int = 100) -> int:
    """The first base in [start, stop) whose ``count`` ports are all free right now (below the ephemeral range,
    so the kernel does not hand them out meanwhile); raise RuntimeError if there is none."""
    for base in range(start, stop, step):
        if all(port_is_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError(f"no {count} free loopback ports in a row between {start} and {stop}")
