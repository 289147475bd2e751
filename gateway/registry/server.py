"""The central registry's HTTP face: serves the current signed global configuration and regenerates it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import ssl
from pathlib import Path

from aiohttp import web
from cryptography import x509
from prometheus_client import Counter, Gauge

from gateway.audit.trail import AuditTrail
from gateway.configfile import load_model
from gateway.core.settings import FederationConfig
from gateway.monitoring.metrics import metrics_handler
from gateway.registry.management import ManagementApi, RequestQueue, effective_federation, server_context
from gateway.registry.publisher import Publisher

log = logging.getLogger("wasl.registry")
PUBLISHED = Counter("wasl_registry_globalconf_published", "Global configurations generated and signed")
RELOAD_FAILURES = Counter("wasl_registry_federation_reload_failures", "Federation file reloads that failed")
SERIAL = Gauge("wasl_registry_globalconf_serial", "Serial of the configuration being served")
ENTITIES = Gauge("wasl_registry_entities", "Federation size", ["kind"])
SERVED = Counter("wasl_registry_globalconf_downloads", "Global configuration downloads served")
GLOBALCONF_PATH = "/globalconf"


class Registry:
    def __init__(self, federation_file: Path) -> None:
        self.federation_file = federation_file
        seed = load_model(federation_file, FederationConfig)
        management = seed.registry.management
        self.queue = RequestQueue(management.state_dir) if management else None
        self.publisher = self._publisher(seed)
        self._loaded_digest = self._file_digest()
        self.current = b""
        self._publish()

    def _publisher(self, seed: FederationConfig) -> Publisher:
        """The file's federation with approved registration requests applied (docs/onboarding.md)."""
        return Publisher.from_files(effective_federation(seed, self.queue) if self.queue else seed)

    def federation_now(self) -> tuple[FederationConfig, list[x509.Certificate]]:
        """The federation as it stands (file plus approved requests), re-read so a decision just made counts."""
        seed = load_model(self.federation_file, FederationConfig)
        fed = effective_federation(seed, self.queue) if self.queue else seed
        return fed, list(self.publisher.ca_certificates)

    def management_app(self) -> web.Application | None:
        management = self.publisher.federation.registry.management
        if self.queue is None or management is None:
            return None
        return ManagementApi(self.queue, self.federation_now, list(management.auto_approve)).app()

    def management_ssl(self) -> ssl.SSLContext | None:
        management = self.publisher.federation.registry.management
        return server_context(management, list(self.publisher.ca_certificates)) if management else None

    def _publish(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.current = self.publisher.publish(now)
        fed = self.publisher.federation
        PUBLISHED.inc()
        SERIAL.set(int(now.timestamp() * 1000))
        ENTITIES.labels("member").set(len(fed.members))
        ENTITIES.labels("subsystem").set(sum(len(m.subsystems) for m in fed.members))
        ENTITIES.labels("gateway").set(len(fed.gateways))

    def regenerate(self) -> None:
        """Reload the federation file (so edits take effect without a restart) and publish afresh. A change of
        the file, applied or refused, is written to the audit trail."""
        digest = self._file_digest()
        changed = digest != self._loaded_digest
        try:
            self.publisher = self._publisher(load_model(self.federation_file, FederationConfig))
            if changed:
                self._audit_change("ok", {"sha256": digest})
        except Exception as exc:  # keep publishing the last good federation; say why once per cycle
            RELOAD_FAILURES.inc()
            log.error("federation file not reloaded, keeping the previous one: %s", exc)
            if changed:
                self._audit_change("failed", {"sha256": digest, "error": str(exc)[:500]})
        self._loaded_digest = digest
        self._publish()

    def _file_digest(self) -> str:
        try:
            return hashlib.sha256(self.federation_file.read_bytes()).hexdigest()
        except OSError:
            return ""

    def _audit_change(self, result: str, detail: dict[str, str]) -> None:
        management = self.publisher.federation.registry.management
        state = management.state_dir if management else self.federation_file.parent / "registry-state"
        AuditTrail(state / "audit.jsonl").record(actor=f"file:{self.federation_file}",
                                                 action="registry.config.change", target=str(self.federation_file),
                                                 result=result, detail=detail)

    async def _regenerate_forever(self, app: web.Application) -> None:
        interval = self.publisher.federation.registry.refresh_seconds
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.regenerate)

    async def _background(self, app: web.Application):  # type: ignore[no-untyped-def]
        task = asyncio.create_task(self._regenerate_forever(app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def globalconf(self, request: web.Request) -> web.Response:
        SERVED.inc()
        return web.Response(body=self.current, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(GLOBALCONF_PATH, self.globalconf)
        app.router.add_get("/livez", self.livez)
        app.router.add_get("/readyz", self.livez)
        app.router.add_get("/metrics", metrics_handler())
        app.cleanup_ctx.append(self._background)
        return app


def serve(federation_file: Path, host: str | None = None, port: int | None = None) -> None:
    """Publish over HTTP and, when the federation file configures it, run the management API over mutual TLS."""
    asyncio.run(_serve(Registry(federation_file), host, port))


async def _serve(registry: Registry, host: str | None, port: int | None) -> None:
    import signal

    settings = registry.publisher.federation.registry
    runners = []
    runner = web.AppRunner(registry.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or settings.host, port if port is not None else settings.port).start()
    runners.append(runner)
    management_app = registry.management_app()
    if management_app is not None and settings.management is not None:
        mrunner = web.AppRunner(management_app, access_log=None)
        await mrunner.setup()
        await web.TCPSite(mrunner, settings.management.host, settings.management.port,
                          ssl_context=registry.management_ssl()).start()
        runners.append(mrunner)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for r in reversed(runners):
            await r.cleanup()
