"""A real `wasl gateway serve --workers 2`: metrics move with traffic across both worker processes (one merged view
from whichever worker answers the scrape), and both workers write operational records into one store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp

from gateway.configfile import load_model
from gateway.core import identifiers as ids
from gateway.core.settings import GatewaySettings
from gateway.demo import federation as fed
from gateway.proxy.app import RunningGateway
from gateway.registry.server import Registry
from tests.conftest import backend_app, demo_services, free_ports, soap_request, start_app
from tests.test_exchange import metric_value

ECHO = ids.ServiceId("DEMO", "GOV", "1001", "population", "echo")


async def _ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(300):
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} not ready: {log.read_text()[-3000:]}")


def _client_records(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM opmon_record WHERE side = 'client'").fetchone()[0])


async def test_metrics_move_with_traffic_across_two_worker_processes(tmp_path: Path) -> None:
    backend_runner, backend_port = await start_app(backend_app())
    p = free_ports(7)
    ports = fed.Ports(registry=p[0], client_side={"civil": p[1], "tax": p[2], "health": p[3]},
                      server_side={"civil": p[4], "tax": p[5], "health": p[6]})
    overrides = {k: {"globalconf_refresh_seconds": 0.5} for k in ("civil", "tax", "health")}
    layout = fed.build(tmp_path, ports, demo_services(f"http://127.0.0.1:{backend_port}"),
                       global_groups=[{"code": "trusted", "members": ["DEMO/GOV/1002/tax-records"]}],
                       gateway_overrides=overrides)
    registry_runner, _ = await start_app(Registry(layout.federation_file).app(), ports.registry)
    civil = RunningGateway(load_model(layout.gateway_files["civil"], GatewaySettings))
    await civil.start()
    log = tmp_path / "health.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "gateway", "serve", "--config",
                                 str(layout.gateway_files["health"]), "--workers", "2"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{ports.client_side['health']}"
    # A new connection per request, so the kernel spreads them over both workers (SO_REUSEPORT).
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
    try:
        await _ready(session, base + "/readyz", proc, log)

        async def scrape() -> str:
            async with session.get(base + "/metrics") as resp:
                assert resp.status == 200
                return await resp.text()

        before = metric_value(await scrape(), "wasl_requests_total", side="client", status_class="2xx")
        client = ids.SubsystemId("DEMO", "GOV", "1003", "patients")
        for i in range(24):
            async with session.post(base + "/", data=soap_request(client, ECHO, xroad_id=f"w-{i}"),
                                    headers={"Content-Type": "text/xml; charset=utf-8"}) as resp:
                assert resp.status == 200, await resp.text()
        # Every scrape, whichever worker answers it, sees the traffic of both.
        for _ in range(4):
            text = await scrape()
            assert metric_value(text, "wasl_requests_total", side="client", status_class="2xx") == before + 24
            assert metric_value(text, "wasl_request_duration_seconds_count", side="client", protocol="soap") >= 24
            assert metric_value(text, "wasl_in_flight_requests", side="client") == 0
        folder = tmp_path / "state" / "health" / "metrics"
        pids = {f.stem.rsplit("_", 1)[1] for f in folder.glob("counter_*.db")}
        assert len(pids) >= 2, pids  # both workers counted traffic
        opmon_db = tmp_path / "state" / "health" / "opmon.db"
        for _ in range(100):
            if opmon_db.exists() and await asyncio.to_thread(_client_records, opmon_db) == 24:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_client_records, opmon_db) == 24
        text = await scrape()
        assert metric_value(text, "wasl_opmon_records_written_total") == 24
    finally:
        await session.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        await civil.stop()
        await registry_runner.cleanup()
        await backend_runner.cleanup()
