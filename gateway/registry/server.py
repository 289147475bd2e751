"""The central registry's HTTP face: serves the current signed global configuration and regenerates it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from pathlib import Path

from aiohttp import web
from prometheus_client import Counter, Gauge

from gateway.configfile import load_model
from gateway.core.settings import FederationConfig
from gateway.monitoring.metrics import metrics_handler
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
        self.publisher = Publisher.from_files(load_model(federation_file, FederationConfig))
        self.current = b""
        self._publish()

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
        """Reload the federation file (so edits take effect without a restart) and publish afresh."""
        try:
            self.publisher = Publisher.from_files(load_model(self.federation_file, FederationConfig))
        except Exception as exc:  # keep publishing the last good federation; say why once per cycle
            RELOAD_FAILURES.inc()
            log.error("federation file not reloaded, keeping the previous one: %s", exc)
        self._publish()

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
    registry = Registry(federation_file)
    settings = registry.publisher.federation.registry
    web.run_app(registry.app(), host=host or settings.host, port=port if port is not None else settings.port,
                print=None, access_log=None)
