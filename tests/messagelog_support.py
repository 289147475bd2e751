"""Helpers for the message-log tests: a PostgreSQL database per test, a federation with a real TSA, exchanges."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web

from gateway.configfile import load_model
from gateway.core.settings import GatewaySettings
from gateway.demo import federation as fed
from gateway.messagelog.gateway_log import open_store
from gateway.messagelog.store import MessageLogStore
from gateway.proxy.app import RunningGateway
from gateway.registry.server import Registry
from gateway.trust.tsa import load_authority, make_tsa_app
from tests.conftest import backend_app, demo_services, free_ports, start_app

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_DSN = os.environ.get("WASL_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent.parent

# Exchanges the tests make: civil calls the tax authority's REST service, health calls civil's SOAP echo.
REST_PATH = "/r1/DEMO/GOV/1002/tax-records/taxpayers/{n}"
REST_CLIENT = "DEMO/GOV/1001/population"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test (gateway ids repeat across tests); skipped when PostgreSQL is
    unreachable, but a failure when CI=true."""
    name = f"wasl_mlog_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        reason = f"PostgreSQL at {PG_ADMIN_DSN} is not usable: {exc!r}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The message_log settings that select each store; tests add their own keys."""
    if request.param == "sqlite":
        return {"store": "sqlite"}
    return {"store": "postgresql", "dsn": request.getfixturevalue("pg_database")}


class TsaServer:
    """The built-in TSA (the same app as ``wasl tsa serve``) on a fixed port, stoppable to play an outage."""

    def __init__(self, directory: Path, port: int) -> None:
        tsa = directory / "pki" / "tsa"
        self.authority = load_authority(tsa / "tsa.key", tsa / "tsa.pem", [directory / "pki" / "ca" / "ca.pem"])
        self.port = port
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.runner = web.AppRunner(make_tsa_app(self.authority), access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class LogFederation:
    layout: fed.Layout
    tsa: TsaServer
    session: aiohttp.ClientSession
    gateways: dict[str, RunningGateway] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)

    def client_url(self, agency: str, path: str) -> str:
        return f"http://127.0.0.1:{self.layout.ports.client_side[agency]}{path}"

    def settings(self, agency: str) -> GatewaySettings:
        return load_model(self.layout.gateway_files[agency], GatewaySettings)

    def store(self, agency: str) -> MessageLogStore:
        """A second handle on a gateway's message log (open it yourself)."""
        s = self.settings(agency)
        return open_store(s.message_log, s.state_dir, s.server_id.path())

    async def rest(self, n: int | str, xroad_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"X-Road-Client": REST_CLIENT, **({"X-Road-Id": xroad_id} if xroad_id else {})}
        async with self.session.get(self.client_url("civil", REST_PATH.format(n=n)), headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def edit_gateway_files(layout: fed.Layout, edit: Callable[[str, dict[str, Any]], None]) -> None:
    """Change the generated gateway YAML files in place: ``edit(agency, config)``."""
    for agency, path in layout.gateway_files.items():
        config = yaml.safe_load(path.read_text())
        edit(agency, config)
        path.write_text(yaml.safe_dump(config, sort_keys=False))


async def start_log_federation(directory: Path, message_log: dict[str, Any], *, start_gateways: bool = True,
                               edit: Callable[[str, dict[str, Any]], None] | None = None) -> LogFederation:
    """Registry, a TSA the federation lists, the test backend and (unless told not to) the three gateways in
    this event loop, each with ``message_log`` as its message-log settings."""
    backend_runner, backend_port = await start_app(backend_app())
    ports_list = free_ports(8)
    ports = fed.Ports(registry=ports_list[0],
                      client_side={"civil": ports_list[1], "tax": ports_list[2], "health": ports_list[3]},
                      server_side={"civil": ports_list[4], "tax": ports_list[5], "health": ports_list[6]})
    tsa_port = ports_list[7]
    overrides = {k: {"globalconf_refresh_seconds": 0.3, "message_log": message_log} for k in ports.client_side}
    layout = fed.build(directory, ports, demo_services(f"http://127.0.0.1:{backend_port}"),
                       global_groups=[{"code": "trusted", "members": ["DEMO/GOV/1002/tax-records"]}],
                       gateway_overrides=overrides, tsa_url=f"http://127.0.0.1:{tsa_port}/")
    if edit is not None:
        edit_gateway_files(layout, edit)
    tsa = TsaServer(directory, tsa_port)
    await tsa.start()
    registry = Registry(layout.federation_file)
    registry_runner, _ = await start_app(registry.app(), ports.registry)
    federation = LogFederation(layout, tsa, aiohttp.ClientSession(), runners=[backend_runner, registry_runner])
    if start_gateways:
        for key, path in layout.gateway_files.items():
            gw = RunningGateway(load_model(path, GatewaySettings))
            await gw.start()
            federation.gateways[key] = gw
    return federation


async def stop_log_federation(federation: LogFederation) -> None:
    await federation.session.close()
    for gw in federation.gateways.values():
        await gw.stop()
    await federation.tsa.stop()
    for runner in federation.runners:
        await runner.cleanup()


def openssl_or_skip() -> str:
    path = shutil.which("openssl")
    if path is None:
        if IN_CI:
            pytest.fail("openssl is required in CI to cross-check RFC 3161 tokens")
        pytest.skip("openssl not installed: cannot cross-check RFC 3161 tokens")
    return path
