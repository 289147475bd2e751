"""The demo's fourth agency: it joins the running federation live, by the same commands an agency's IT team runs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from gateway.cli import main
from gateway.core import identifiers as ids
from gateway.demo import federation as fed

MEMBER = "DEMO/GOV/1004"
NAME = "Social Insurance Board"
SERVER = f"{MEMBER}/gw-social"
SUBSYSTEM = ids.SubsystemId("DEMO", "GOV", "1004", "benefits")


async def _cli(*args: object) -> int:
    """Run a ``wasl`` command as a user would (in a thread: some of them talk to the registry)."""
    return await asyncio.to_thread(main, [str(a) for a in args])


async def join(layout: fed.Layout, client_port: int, server_port: int, logs: Path,
               procs: list[subprocess.Popen[bytes]], say=print) -> str:  # type: ignore[no-untyped-def]
    """Set up, certify, register (each request approved by the administrator) and start the new gateway; return
    its client-side URL once it serves."""
    from gateway.registry.management import RequestQueue

    folder, ca = layout.directory / "social", layout.directory / "pki" / "ca"
    anchor = layout.directory / "anchor.yaml"
    queue_dir = layout.directory / "registry-state"
    steps: list[tuple[str, tuple[object, ...]]] = [
        ("registry anchor", ("registry", "anchor", "--config", layout.federation_file, "--out", anchor)),
        ("gateway init", ("gateway", "init", "--dir", folder, "--member", MEMBER, "--name", NAME, "--server-code",
                          "gw-social", "--anchor", anchor, "--client-port", client_port, "--server-port",
                          server_port)),
        ("CA signs the sign CSR", ("pki", "sign-csr", "--ca", ca, "--kind", "sign", "--csr", folder / "csr/sign.csr",
                                   "--member", MEMBER, "--name", NAME, "--out", folder / "certs/sign.pem")),
        ("CA signs the auth CSR", ("pki", "sign-csr", "--ca", ca, "--kind", "auth", "--csr", folder / "csr/auth.csr",
                                   "--server", SERVER, "--out", folder / "certs/auth.pem")),
    ]
    config = folder / "gateway.yaml"
    requests = [("member", "--member-name", NAME), ("subsystem", "--subsystem", SUBSYSTEM.subsystem_code),
                ("gateway", "--address", f"https://127.0.0.1:{server_port}"), ("client", "--client", SUBSYSTEM.path())]
    import contextlib
    import io

    quiet = io.StringIO()
    for title, args in steps:
        with contextlib.redirect_stdout(quiet):
            if await _cli(*args) != 0:
                raise RuntimeError(f"fourth agency: {title} failed")
        say(f"  [ok] wasl {' '.join(str(a) for a in args[:2])}: {title}")
    for kind, *extra in requests:
        with contextlib.redirect_stdout(quiet):
            if await _cli("gateway", "register", kind, "--config", config, *extra) != 0:
                raise RuntimeError(f"fourth agency: the {kind} registration request failed")
            pending = RequestQueue(queue_dir).requests("pending")
            if len(pending) != 1 or await _cli("registry", "approve", pending[0].id, "--config",
                                               layout.federation_file) != 0:
                raise RuntimeError(f"fourth agency: approving the {kind} request failed")
        say(f"  [ok] signed request '{kind}' sent over mutual TLS, approved by the registry's administrator "
            f"({pending[0].target})")
    log_file = logs / "gateway-social.log"
    out = log_file.open("ab")
    procs.append(subprocess.Popen([sys.executable, "-m", "gateway.cli", "gateway", "serve", "--config", str(config)],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
    url = f"http://127.0.0.1:{client_port}"
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if procs[-1].poll() is not None:
                raise RuntimeError(f"the new gateway exited; see {log_file}")
            try:
                async with session.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"the new gateway did not become ready; see {log_file}")
    say(f"  [ok] gateway {SERVER} started: client side {url}")
    return url + "/"
