"""Whether a loopback TCP port is free, for the demo runner and the exchange benchmark."""

from __future__ import annotations

import socket


def port_is_free(port: int) -> bool:
    """Return True if ``port`` can be bound on 127.0.0.1 right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
