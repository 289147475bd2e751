"""`wasl demo --once` as a user runs it: real processes, real sockets, exit code 0 when every exchange passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.demo.ports import free_port_range


def test_demo_once_runs_the_whole_federation(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "demo", "--once", "--dir", str(tmp_path),
                             "--base-port", str(free_port_range(30))], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("[PASS]") == 8 and "[FAIL]" not in out
    assert "Social Insurance Board (joined live)" in out and "approved by the registry's administrator" in out
    assert "Server.ServerProxy.AccessDenied" in out
    assert "X-Road-Id=demo-soap-1" in out
    assert "curl -s" in out
    assert "certificate status" in out  # the CA's OCSP responder runs, and every gateway holds a fresh status
    assert len(list(tmp_path.glob("state/*/ocsp/*.der"))) == 6  # sign and auth certificates of three gateways
    assert len(list(tmp_path.glob("social/state/ocsp/*.der"))) == 2  # and of the agency that joined
    # keys are generated at run time and readable by their owner only
    for key in (tmp_path / "pki").rglob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600
