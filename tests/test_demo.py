"""`wasl demo --once` as a user runs it: real processes, real sockets, exit code 0 when every exchange passes."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def free_base_port() -> int:
    """A base below the ephemeral range whose 30 ports are all free right now."""
    for base in range(20000, 32000, 100):
        socks = []
        try:
            for offset in range(30):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def test_demo_once_runs_the_whole_federation(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--once", "--dir", str(tmp_path),
                             "--base-port", str(free_base_port())], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("[PASS]") == 7 and "[FAIL]" not in out
    assert "Server.ServerProxy.AccessDenied" in out
    assert "X-Road-Id=demo-soap-1" in out
    assert "curl -s" in out
    # keys are generated at run time and readable by their owner only
    for key in (tmp_path / "pki").rglob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600
