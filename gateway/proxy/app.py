"""Runs a gateway: both faces on their own sockets, one event loop per process, one process per worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
from pathlib import Path

from aiohttp import web

from gateway.audit.trail import AuditTrail
from gateway.configfile import load_model
from gateway.core.settings import GatewaySettings
from gateway.monitoring import metrics
from gateway.proxy import tls
from gateway.proxy.client_side import ClientProxy
from gateway.proxy.peerlink import PeerLinkServer
from gateway.proxy.runtime import GatewayRuntime
from gateway.proxy.server_side import ServerProxy

log = logging.getLogger("wasl.gateway")


def _health_routes(app: web.Application, runtime: GatewayRuntime) -> None:
    async def livez(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        conf = runtime.conf.current
        if conf is None:
            return web.Response(status=503, text="not ready: no global configuration\n")
        if conf.is_expired(runtime.now()):
            return web.Response(status=503, text="not ready: global configuration expired\n")
        expired, expiring = runtime.certificate_problems(runtime.settings.certificate_warning_days)
        if expired:
            return web.Response(status=503, text=f"not ready: {expired}\n")
        status_problem = runtime.own_status.problem(conf, runtime.now())
        if status_problem:
            return web.Response(status=503, text=f"not ready: {status_problem}\n")
        stamping = runtime.message_log.timestamping_problem()
        if stamping is not None:
            refusing, why = stamping
            if refusing:
                return web.Response(status=503, text=f"not ready: message log: {why}\n")
            return web.Response(text=f"ready\nwarning: message log: {why}\n")
        if expiring:
            return web.Response(text=f"ready\nwarning: {expiring}\n")
        return web.Response(text="ready\n")

    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics.metrics_handler(runtime.update_gauges))


def build_client_app(runtime: GatewayRuntime) -> web.Application:
    app = web.Application(client_max_size=runtime.settings.client_side.max_body_bytes + 1)
    _health_routes(app, runtime)
    app.router.add_route("*", "/{tail:.*}", ClientProxy(runtime).handle)
    return app


class RunningGateway:
    """A started gateway in this event loop (used by the worker processes and by in-process tests)."""

    def __init__(self, settings: GatewaySettings, reuse_port: bool = False) -> None:
        self.settings = settings
        self.runtime = GatewayRuntime(settings)
        self.reuse_port = reuse_port
        self._runners: list[web.AppRunner] = []
        self._peer_server: PeerLinkServer | None = None
        self.client_port = 0
        self.server_port = 0

    async def start(self) -> None:
        await self.runtime.start()
        s = self.settings
        runner = web.AppRunner(build_client_app(self.runtime), access_log=None, handle_signals=False)
        await runner.setup()
        client_tls = s.client_side.tls
        client_ssl = (tls.information_system_context(client_tls.certificate, client_tls.key, client_tls.client_cas)
                      if client_tls is not None else None)
        site = web.TCPSite(runner, s.client_side.host, s.client_side.port, ssl_context=client_ssl,
                           reuse_port=self.reuse_port or None, backlog=1024)
        await site.start()
        self._runners.append(runner)
        sockets = getattr(site._server, "sockets", None)  # aiohttp exposes the bound port only here
        self.client_port = sockets[0].getsockname()[1] if sockets else s.client_side.port
        assert self.runtime.server_ssl is not None
        # Headroom over the body limit for the manifest, signature and certificate in the same frame.
        self._peer_server = PeerLinkServer(ServerProxy(self.runtime).handle_frame,
                                           max_frame_bytes=s.server_side.max_body_bytes + 256 * 1024)
        self.server_port = await self._peer_server.start(s.server_side.host, s.server_side.port,
                                                         self.runtime.server_ssl, reuse_port=self.reuse_port)

    async def reload(self, config_file: Path) -> list[str]:
        """Re-read the configuration file and install rotated keys (GatewayRuntime.reload_keys); a bad file or
        key changes nothing and is logged."""
        try:
            settings = load_model(config_file, GatewaySettings)
            changed = await self.runtime.reload_keys(settings)
        except Exception as exc:  # the running keys stay in use
            log.error("reload of %s failed, keys unchanged: %s", config_file, exc)
            AuditTrail(self.runtime.settings.state_dir / "audit.jsonl").record(
                actor="signal:SIGHUP", action="gateway.config.reload", target=str(config_file), result="failed",
                detail={"error": str(exc)[:500]})
            return []
        log.info("reloaded %s: %s", config_file, ", ".join(changed) or "no key changed")
        AuditTrail(self.runtime.settings.state_dir / "audit.jsonl").record(
            actor="signal:SIGHUP", action="gateway.config.reload", target=str(config_file), result="ok",
            detail={"installed": ", ".join(changed) or "nothing"})
        return changed

    async def stop(self) -> None:
        if self._peer_server is not None:
            await self._peer_server.close()
        for runner in self._runners:
            await runner.cleanup()
        await self.runtime.close()


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Every exchange allocates hundreds of short-lived containers, so at CPython's default (700) the young generation
# is collected several times per exchange, and each older collection also walks everything loaded at start-up
# (settings, WSDLs, certificates, the global configuration). Measured with bench/exchange.py-style runs: ~100 us less
# CPU per exchange and ~8% more throughput with a larger young generation and the start-up heap frozen.
_GC_THRESHOLDS = (50_000, 20, 10)


def _tune_gc_after_start() -> None:
    """Move what start-up built out of the collector's way, and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


async def _run_until_signalled(settings: GatewaySettings, reuse_port: bool, config_file: Path | None = None) -> None:
    gateway = RunningGateway(settings, reuse_port=reuse_port)
    await gateway.start()
    _tune_gc_after_start()
    if config_file is not None:
        # SIGHUP (wasl gateway rotate sends it) installs rotated keys and certificates from the file, no restart.
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGHUP, lambda: asyncio.ensure_future(gateway.reload(config_file)))
    log.info("gateway %s: client side on %s:%s, server side on %s:%s (pid %s)", settings.server,
             settings.client_side.host, gateway.client_port, settings.server_side.host, gateway.server_port,
             os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await gateway.stop()


def _worker(config_file: str, reuse_port: bool) -> None:
    _install_uvloop()
    settings = load_model(Path(config_file), GatewaySettings)
    asyncio.run(_run_until_signalled(settings, reuse_port, Path(config_file)))


def serve(config_file: Path, workers: int | None = None) -> None:
    """Run the gateway; with several workers each process binds the same ports with SO_REUSEPORT and the
    kernel spreads connections across them."""
    settings = load_model(config_file, GatewaySettings)
    count = workers or settings.workers
    # Where wasl gateway rotate finds the process to signal.
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "gateway.pid").write_text(f"{os.getpid()}\n")
    if count > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        raise SystemExit("internal: several workers need PROMETHEUS_MULTIPROC_DIR set before start-up")
    if count == 1:
        _worker(str(config_file), reuse_port=False)
        return
    if 0 in (settings.client_side.port, settings.server_side.port):
        raise SystemExit("several workers need fixed ports (port 0 would give each worker its own)")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(config_file), True), daemon=False) for _ in range(count)]
    for proc in procs:
        proc.start()

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

    def forward_reload(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward_reload)
    for proc in procs:
        proc.join()
